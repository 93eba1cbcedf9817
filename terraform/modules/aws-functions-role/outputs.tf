output "role_arn" {
  description = "The role's ARN: the role_arn of module gcp-functions' input aws_web_identity (UMS_AWS_ROLE_ARN)."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "The role's name."
  value       = aws_iam_role.this.name
}

output "audience" {
  description = "The ID token audience the trust checks: the audience of module gcp-functions' input aws_web_identity (UMS_AWS_TOKEN_AUDIENCE)."
  value       = var.audience
}
