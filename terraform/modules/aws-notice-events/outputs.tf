output "api_destination_arn" {
  description = "The API destination that delivers to the ingress."
  value       = aws_cloudwatch_event_api_destination.ingress.arn
}

output "rule_arns" {
  description = "The rules, by what they match (ec2: spot warnings and rebalance advice; health: AWS Health's EC2 scheduled changes)."
  value       = { for k, rule in aws_cloudwatch_event_rule.notices : k => rule.arn }
}
