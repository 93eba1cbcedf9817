locals {
  # Post-copy goes through the runtime shim Podman is given: a Docker host announces no page relay and opens none.
  page_relay = var.post_copy && var.engine == "podman"
  # The relay's fixed ports (UMS_PAGE_RELAY_PORTS), as an NSG rule spells a range.
  relay_ports = var.page_relay_ports.from == var.page_relay_ports.to ? tostring(var.page_relay_ports.from) : "${var.page_relay_ports.from}-${var.page_relay_ports.to}"
  vault_uri   = "https://${var.key_vault_name}.vault.azure.net"
}

resource "azurerm_public_ip" "this" {
  name                = "ums-${var.agent_id}"
  resource_group_name = var.resource_group_name
  location            = var.location
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = var.tags
}

# Standard public IPs are closed unless an NSG opens them: only the page relay, only to the peers.
resource "azurerm_network_security_group" "this" {
  name                = "ums-${var.agent_id}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags

  dynamic "security_rule" {
    for_each = length(var.peer_cidrs) > 0 && local.page_relay ? [1] : []
    content {
      name                       = "ums-page-relay-from-peers"
      priority                   = 200
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_address_prefixes    = var.peer_cidrs
      source_port_range          = "*"
      destination_address_prefix = "*"
      destination_port_range     = local.relay_ports
      description                = "UMS post-copy page relay, from the deployment's own hosts only"
    }
  }

  dynamic "security_rule" {
    for_each = length(var.service_ingress.cidrs) > 0 && length(var.service_ingress.ports) > 0 ? [1] : []
    content {
      name                       = "ums-services-from-frontmen"
      priority                   = 210
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_address_prefixes    = var.service_ingress.cidrs
      source_port_range          = "*"
      destination_address_prefix = "*"
      destination_port_ranges    = [for p in var.service_ingress.ports : tostring(p)]
      description                = "The ports this host's containers publish, from the services' frontmen only"
    }
  }
}

resource "azurerm_network_interface" "this" {
  name                = "ums-${var.agent_id}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = var.subnet_id
    private_ip_address_allocation = "Dynamic"
    public_ip_address_id          = azurerm_public_ip.this.id
  }
}

resource "azurerm_network_interface_security_group_association" "this" {
  network_interface_id      = azurerm_network_interface.this.id
  network_security_group_id = azurerm_network_security_group.this.id
}

module "cloud_init" {
  source = "../agent-cloud-init"

  agent_id           = var.agent_id
  cloud              = "azure"
  region             = var.location
  store_url          = var.store_url
  nats_url           = var.nats_url
  nats_ca_pem        = var.nats_ca_pem
  command_verify_key = var.command_verify_key
  secrets = {
    nats_credential = var.nats_credential_secret_name
    storage_key     = var.storage_key_secret_name
    vault           = var.key_vault_name
  }
  engine             = var.engine
  page_relay_address = local.page_relay ? azurerm_public_ip.this.ip_address : null
  page_relay_ports   = var.page_relay_ports
  # Where a frontman reaches the ports this host's containers publish (the same stable public address).
  service_address = azurerm_public_ip.this.ip_address
  release_url     = var.release_url
  release_sha256  = var.release_sha256
}

resource "azurerm_linux_virtual_machine" "this" {
  name                  = var.agent_id
  resource_group_name   = var.resource_group_name
  location              = var.location
  size                  = var.vm_size
  network_interface_ids = [azurerm_network_interface.this.id]
  admin_username        = var.admin_username
  custom_data           = base64encode(module.cloud_init.cloud_config)

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }
  disable_password_authentication = true

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = var.os_disk_gib
  }

  source_image_reference {
    publisher = "Debian"
    offer     = "debian-13"
    sku       = "13-gen2"
    version   = "latest"
  }

  identity {
    type = "SystemAssigned"
  }

  tags = var.tags
}

# The host's identity: blob data in its own container, and its own two secrets; nothing else.
resource "azurerm_role_assignment" "blob" {
  scope                = var.storage_container_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_linux_virtual_machine.this.identity[0].principal_id
}

resource "azurerm_role_assignment" "secrets" {
  for_each             = toset([var.nats_credential_secret_name, var.storage_key_secret_name])
  scope                = "${var.key_vault_id}/secrets/${each.value}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_linux_virtual_machine.this.identity[0].principal_id
}
