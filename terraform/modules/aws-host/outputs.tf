output "agent_id" {
  description = "The agent's id (what `ums migrate --to` takes)."
  value       = var.agent_id
}

output "instance_id" {
  description = "The EC2 instance's id."
  value       = aws_instance.this.id
}

output "public_ip" {
  description = "The host's stable public address (its page relay address), null without post-copy."
  value       = var.post_copy ? aws_eip.this[0].public_ip : null
}

output "private_ip" {
  description = "The host's private address."
  value       = aws_instance.this.private_ip
}

output "role_arn" {
  description = "The host's IAM role."
  value       = aws_iam_role.this.arn
}

output "security_group_id" {
  description = "The host's security group."
  value       = aws_security_group.this.id
}
