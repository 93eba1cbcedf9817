output "url" {
  description = "The broker's URL for every component (NATS_URL)."
  value       = "tls://${var.dns_name}:4222"
}

output "addresses" {
  description = "The servers' external addresses: create an A record for dns_name with each."
  value       = google_compute_address.external[*].address
}

output "internal_addresses" {
  description = "The servers' internal addresses (the functions and the bridge reach them through Direct VPC egress)."
  value       = google_compute_address.internal[*].address
}

output "stream_replicas" {
  description = "The replica count for the broker's streams and KV buckets: one per server (1, or 3 on a cluster). Pass it to `deploy-credentials provision --replicas`, the one step that creates them."
  value       = length(var.zones)
}
