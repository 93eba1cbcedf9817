output "agent_id" {
  description = "The agent's id (what `ums migrate --to` takes)."
  value       = var.agent_id
}

output "vm_id" {
  description = "The VM's resource id."
  value       = azurerm_linux_virtual_machine.this.id
}

output "public_ip" {
  description = "The host's static public address (its page relay address)."
  value       = azurerm_public_ip.this.ip_address
}

output "principal_id" {
  description = "The VM's managed identity (for further role assignments)."
  value       = azurerm_linux_virtual_machine.this.identity[0].principal_id
}

output "vault_uri" {
  description = "The Key Vault the host reads its secrets from."
  value       = local.vault_uri
}
