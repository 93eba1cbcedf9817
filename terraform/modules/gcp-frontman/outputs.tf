output "frontman_id" {
  description = "The frontman's id (UMS_FRONTMAN_ID; `ums` shows it on the migrations it waits for)."
  value       = var.frontman_id
}

output "address" {
  description = "The frontman's static external address: what clients point at (an A record of the services' names)."
  value       = google_compute_address.this.address
}

output "endpoints" {
  description = "Each fronted service's stable endpoint, container -> address:port (what its clients connect to)."
  value       = { for container, port in local.listen_ports : container => "${google_compute_address.this.address}:${port}" }
}

output "instance_id" {
  description = "The instance's id."
  value       = google_compute_instance.this.instance_id
}

output "service_account_email" {
  description = "The frontman's service account."
  value       = google_service_account.this.email
}
