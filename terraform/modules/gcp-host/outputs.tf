output "agent_id" {
  description = "The agent's id (what `ums migrate --to` takes)."
  value       = var.agent_id
}

output "instance_id" {
  description = "The instance's id."
  value       = google_compute_instance.this.instance_id
}

output "public_ip" {
  description = "The host's static external address (its page relay address), null without post-copy."
  value       = var.post_copy ? google_compute_address.this[0].address : null
}

output "service_account_email" {
  description = "The host's service account."
  value       = google_service_account.this.email
}
