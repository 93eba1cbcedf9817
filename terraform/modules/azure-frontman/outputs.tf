output "frontman_id" {
  description = "The frontman's id (UMS_FRONTMAN_ID; `ums` shows it on the migrations it waits for)."
  value       = var.frontman_id
}

output "address" {
  description = "The frontman's static public address: what clients point at (an A record of the services' names)."
  value       = azurerm_public_ip.this.ip_address
}

output "endpoints" {
  description = "Each fronted service's stable endpoint, container -> address:port (what its clients connect to)."
  value       = { for container, port in local.listen_ports : container => "${azurerm_public_ip.this.ip_address}:${port}" }
}

output "vm_id" {
  description = "The VM's resource id."
  value       = azurerm_linux_virtual_machine.this.id
}

output "principal_id" {
  description = "The VM's managed identity."
  value       = azurerm_linux_virtual_machine.this.identity[0].principal_id
}

output "vault_uri" {
  description = "The Key Vault the frontman reads its broker credential from."
  value       = local.vault_uri
}
