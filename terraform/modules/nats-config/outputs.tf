output "nats_conf" {
  description = "The server's nats.conf (no secret in it: the TLS key is a path, the users are public nkeys)."
  value       = local.nats_conf
}
