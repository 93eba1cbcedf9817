output "frontman_id" {
  description = "The frontman's id (UMS_FRONTMAN_ID; `ums` shows it on the migrations it waits for)."
  value       = var.frontman_id
}

output "address" {
  description = "The frontman's Elastic IP: what clients point at (an A record of the services' names)."
  value       = aws_eip.this.public_ip
}

output "endpoints" {
  description = "Each fronted service's stable endpoint, container -> address:port (what its clients connect to)."
  value       = { for container, port in local.listen_ports : container => "${aws_eip.this.public_ip}:${port}" }
}

output "instance_id" {
  description = "The EC2 instance's id."
  value       = aws_instance.this.id
}

output "role_arn" {
  description = "The frontman's IAM role."
  value       = aws_iam_role.this.arn
}

output "security_group_id" {
  description = "The frontman's security group."
  value       = aws_security_group.this.id
}
