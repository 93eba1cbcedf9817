/*
 * The frontman on Azure (gcp-frontman's counterpart): the stable address of migratable services, on a small
 * VM of its own, none of the services' hosts: a host being evacuated would take its frontman with it, and
 * switching DNS or a load balancer cannot hold requests while a service is frozen. Clients point at its
 * static public IP; it holds their requests through a migration and forwards them to whichever host runs
 * the service after it (the host's UMS_SERVICE_ADDRESS and the port its container publishes).
 */
locals {
  # Each service's listen port: the one clients use on the frontman's address (by default the published port).
  listen_ports = { for s in var.services : s.container => coalesce(s.listen_port, s.port) }
  vault_uri    = "https://${var.key_vault_name}.vault.azure.net"
}

resource "azurerm_public_ip" "this" {
  name                = "ums-${var.frontman_id}"
  resource_group_name = var.resource_group_name
  location            = var.location
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = var.tags
}

# In: the listen ports from the clients (a Standard public IP is closed unless an NSG opens it). Out: the
# broker, the hosts' published ports, 80/443, and nothing else: the deny below overrides Azure's default
# outbound rules (the VNet and the Internet). IMDS and Azure's DNS (169.254.169.254, 168.63.129.16) are
# platform addresses no NSG filters.
resource "azurerm_network_security_group" "this" {
  name                = "ums-${var.frontman_id}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags

  security_rule {
    name                       = "ums-frontman-clients"
    priority                   = 200
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_address_prefixes    = var.client_cidrs
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_ranges    = distinct([for s in var.services : tostring(local.listen_ports[s.container])])
    description                = "UMS frontman: the fronted services' listen ports, from their clients"
  }

  security_rule {
    name                         = "ums-frontman-to-broker"
    priority                     = 200
    direction                    = "Outbound"
    access                       = "Allow"
    protocol                     = "Tcp"
    source_address_prefix        = "*"
    source_port_range            = "*"
    destination_address_prefixes = var.broker_cidrs
    destination_port_range       = tostring(var.broker_port)
    description                  = "UMS frontman: the broker's client port"
  }

  security_rule {
    name                         = "ums-frontman-to-hosts"
    priority                     = 210
    direction                    = "Outbound"
    access                       = "Allow"
    protocol                     = "Tcp"
    source_address_prefix        = "*"
    source_port_range            = "*"
    destination_address_prefixes = var.host_cidrs
    destination_port_ranges      = distinct([for s in var.services : tostring(s.port)])
    description                  = "UMS frontman: the ports the services' containers publish on the deployment's hosts"
  }

  security_rule {
    name                       = "ums-frontman-to-web"
    priority                   = 220
    direction                  = "Outbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_address_prefix      = "*"
    source_port_range          = "*"
    destination_address_prefix = "Internet"
    destination_port_ranges    = ["80", "443"]
    description                = "UMS frontman: Debian's mirrors, the release, Key Vault"
  }

  security_rule {
    name                       = "ums-frontman-deny-out"
    priority                   = 4096
    direction                  = "Outbound"
    access                     = "Deny"
    protocol                   = "*"
    source_address_prefix      = "*"
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_range     = "*"
    description                = "UMS frontman: nothing else goes out"
  }
}

resource "azurerm_network_interface" "this" {
  name                = "ums-${var.frontman_id}"
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

# The agent hosts' install, secret fetching and boot, with the ums-frontman unit (frontman/main.ts).
module "cloud_init" {
  source = "../agent-cloud-init"

  cloud       = "azure"
  region      = var.location
  nats_url    = var.nats_url
  nats_ca_pem = var.nats_ca_pem
  secrets     = { nats_credential = var.nats_credential_secret_name, vault = var.key_vault_name }
  log_level   = var.log_level
  frontman = {
    id = var.frontman_id
    # It binds every interface: the public IP is translated to the NIC's private address.
    services = [for s in var.services : {
      container    = s.container
      protocol     = s.protocol
      listen       = "0.0.0.0:${local.listen_ports[s.container]}"
      port         = s.port
      hold_seconds = s.hold_seconds
    }]
    hold_seconds  = var.hold_seconds
    drain_seconds = var.drain_seconds
    max_held      = var.max_held
    max_held_mib  = var.max_held_mib
    max_body_kib  = var.max_body_kib
  }
  release_url    = var.release_url
  release_sha256 = var.release_sha256
}

resource "azurerm_linux_virtual_machine" "this" {
  name                  = "ums-${var.frontman_id}"
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
    storage_account_type = "StandardSSD_LRS"
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

# Its identity reads its own broker credential, nothing else. The unit restarts every 5 s until this exists.
resource "azurerm_role_assignment" "nats_credential" {
  scope                = "${var.key_vault_id}/secrets/${var.nats_credential_secret_name}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_linux_virtual_machine.this.identity[0].principal_id
}
