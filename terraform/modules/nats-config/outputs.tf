output "nats_conf" {
  description = "The server's nats.conf (no secret in it: the TLS key is a path, the users are public nkeys)."
  value       = local.nats_conf
}

output "boot_script" {
  description = "A broker VM's boot script (GCE startup-script): installs nats-server, writes nats.conf, the certificates and the ums-nats unit, whose start fetches the TLS key from Secret Manager (key_secret)."
  value       = local.boot_script
}
