/*
 * A host in Azure (eastus), a host in GCP (us-central1), a bucket each, the broker and the functions in GCP.
 * Secrets are created empty here and filled outside Terraform (README: `gcloud secrets versions add`,
 * `az keyvault secret set`), so no seed or private key enters the state.
 */
locals {
  azure_agent = "azure-${var.azure_location}-1"
  gcp_agent   = "gcp-${var.gcp_region}-1"
  ca_pem      = file(var.broker_ca_pem_file)
  verify_key  = trimspace(file("${var.credentials_dir}/command-verify-key.txt"))
  nats_url    = module.broker.url
  # Every host's public address: the page relay opens only to these.
  host_cidrs = ["${module.azure_host.public_ip}/32", "${module.gcp_host.public_ip}/32"]
  # The frontman (README: Frontman), only when services are fronted; the hosts let it reach their published ports.
  frontman = length(var.frontman_services) > 0
  service_ingress = {
    cidrs = local.frontman ? ["${module.frontman[0].address}/32"] : []
    ports = distinct([for s in var.frontman_services : s.port])
  }
}

# --- GCP: network, secrets, bucket ------------------------------------------------------------------------
resource "google_compute_network" "ums" {
  name                    = "ums"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "ums" {
  name          = "ums-${var.gcp_region}"
  region        = var.gcp_region
  network       = google_compute_network.ums.id
  ip_cidr_range = "10.10.0.0/24"
}

# One secret per secret; their versions are added outside Terraform (README).
resource "google_secret_manager_secret" "this" {
  for_each = toset(concat([
    "ums-nats-server-key",
    "ums-nats-ca",
    "ums-functions-nats",
    "ums-bridge-nats",
    "ums-command-signing-key",
    "ums-function-auth-key",
    "ums-agent-${local.gcp_agent}-nats",
  ], local.frontman ? ["ums-frontman-nats"] : []))
  secret_id = each.value
  replication {
    auto {}
  }
}

module "gcp_bucket" {
  source     = "../../modules/gcp-bucket"
  project_id = var.gcp_project_id
  name       = "${var.name}-ums-gcp"
  location   = var.gcp_region
}

resource "google_storage_bucket" "functions_source" {
  name                        = "${var.name}-ums-functions-source"
  location                    = var.gcp_region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

# --- the broker and the functions ------------------------------------------------------------------------
module "broker" {
  source     = "../../modules/gcp-nats-broker"
  project_id = var.gcp_project_id
  region     = var.gcp_region
  # One server, or three (one per zone): then provision the streams with 3 replicas (output stream_replicas).
  zones                = coalesce(var.broker_zones, [var.gcp_zone])
  network              = google_compute_network.ums.id
  subnetwork           = google_compute_subnetwork.ums.id
  dns_name             = var.broker_dns_name
  server_cert_pem      = file(var.broker_cert_pem_file)
  ca_pem               = local.ca_pem
  server_key_secret_id = google_secret_manager_secret.this["ums-nats-server-key"].secret_id
  authorization        = file("${var.credentials_dir}/authorization.conf")
  # The hosts, the functions' connector, the bridge's subnet, the operators.
  client_cidrs = concat(local.host_cidrs, ["10.8.0.0/28", google_compute_subnetwork.ums.ip_cidr_range], var.operator_cidrs)
}

module "functions" {
  source             = "../../modules/gcp-functions"
  project_id         = var.gcp_project_id
  region             = var.gcp_region
  source_bucket      = google_storage_bucket.functions_source.name
  source_object      = var.functions_source_object
  bridge_image       = var.bridge_image
  nats_url           = local.nats_url
  network            = google_compute_network.ums.id
  subnetwork         = google_compute_subnetwork.ums.id
  vpc_connector_cidr = "10.8.0.0/28"
  bucket_names       = [module.gcp_bucket.bucket]
  secrets = {
    nats_ca                   = google_secret_manager_secret.this["ums-nats-ca"].secret_id
    functions_nats_credential = google_secret_manager_secret.this["ums-functions-nats"].secret_id
    bridge_nats_credential    = google_secret_manager_secret.this["ums-bridge-nats"].secret_id
    command_signing_key       = google_secret_manager_secret.this["ums-command-signing-key"].secret_id
    function_auth_key         = google_secret_manager_secret.this["ums-function-auth-key"].secret_id
  }
  # Keyless: the functions sign SAS URLs as the Azure identity their Google identity is federated with.
  azure_federation = {
    client_id = module.functions_azure_identity.client_id
    tenant_id = module.functions_azure_identity.tenant_id
    audience  = module.functions_azure_identity.audience
  }
}

# --- the GCP host ----------------------------------------------------------------------------------------
module "gcp_host" {
  source                    = "../../modules/gcp-host"
  project_id                = var.gcp_project_id
  agent_id                  = local.gcp_agent
  region                    = var.gcp_region
  zone                      = var.gcp_zone
  network                   = google_compute_network.ums.id
  subnetwork                = google_compute_subnetwork.ums.id
  bucket                    = module.gcp_bucket.bucket
  store_url                 = module.gcp_bucket.store_url
  nats_url                  = local.nats_url
  nats_ca_pem               = local.ca_pem
  command_verify_key        = local.verify_key
  nats_credential_secret_id = google_secret_manager_secret.this["ums-agent-${local.gcp_agent}-nats"].secret_id
  peer_cidrs                = ["${module.azure_host.public_ip}/32"]
  release_url               = var.release_url
  release_sha256            = var.release_sha256
  service_ingress           = local.service_ingress
}

# --- Azure: resource group, network, Key Vault, storage, the host ----------------------------------------
data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "ums" {
  name     = "ums-${var.name}"
  location = var.azure_location
}

resource "azurerm_virtual_network" "ums" {
  name                = "ums"
  resource_group_name = azurerm_resource_group.ums.name
  location            = azurerm_resource_group.ums.location
  address_space       = ["10.20.0.0/16"]
}

resource "azurerm_subnet" "hosts" {
  name                 = "hosts"
  resource_group_name  = azurerm_resource_group.ums.name
  virtual_network_name = azurerm_virtual_network.ums.name
  address_prefixes     = ["10.20.1.0/24"]
}

resource "azurerm_key_vault" "ums" {
  name                       = "${var.name}-ums-kv"
  resource_group_name        = azurerm_resource_group.ums.name
  location                   = azurerm_resource_group.ums.location
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 7
}

# Whoever runs Terraform sets the secrets' values (the storage key here, the agent's credential by hand).
resource "azurerm_role_assignment" "operator_secrets" {
  scope                = azurerm_key_vault.ums.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

module "azure_storage" {
  source              = "../../modules/azure-storage"
  resource_group_name = azurerm_resource_group.ums.name
  location            = azurerm_resource_group.ums.location
  account_name        = "${var.name}umsaz"
}

# The functions' Azure identity: no secret, their Google service account is federated with it (it signs
# user delegation SAS URLs for the container, and deletes a migration's blobs when it ends).
module "functions_azure_identity" {
  source                           = "../../modules/azure-functions-identity"
  resource_group_name              = azurerm_resource_group.ums.name
  location                         = azurerm_resource_group.ums.location
  google_service_account_unique_id = module.functions.functions_service_account_unique_id
  stores = {
    (local.azure_agent) = { account_id = module.azure_storage.account_id, container_id = module.azure_storage.container_id }
  }
}

# The agent signs in to Blob with the account key (agents/main.ts has no managed-identity path for Blob yet):
# it goes into Key Vault, where only the host's identity may read it.
resource "azurerm_key_vault_secret" "storage_key" {
  name         = "ums-storage-key"
  key_vault_id = azurerm_key_vault.ums.id
  value        = module.azure_storage.primary_access_key
  depends_on   = [azurerm_role_assignment.operator_secrets]
}

module "azure_host" {
  source                      = "../../modules/azure-host"
  resource_group_name         = azurerm_resource_group.ums.name
  location                    = azurerm_resource_group.ums.location
  agent_id                    = local.azure_agent
  subnet_id                   = azurerm_subnet.hosts.id
  admin_ssh_public_key        = var.admin_ssh_public_key
  storage_account_id          = module.azure_storage.account_id
  storage_container_id        = module.azure_storage.container_id
  store_url                   = module.azure_storage.store_url
  key_vault_id                = azurerm_key_vault.ums.id
  key_vault_name              = azurerm_key_vault.ums.name
  nats_credential_secret_name = "ums-agent-${local.azure_agent}-nats"
  storage_key_secret_name     = azurerm_key_vault_secret.storage_key.name
  nats_url                    = local.nats_url
  nats_ca_pem                 = local.ca_pem
  command_verify_key          = local.verify_key
  peer_cidrs                  = ["${module.gcp_host.public_ip}/32"]
  release_url                 = var.release_url
  release_sha256              = var.release_sha256
  service_ingress             = local.service_ingress
}

# --- the frontman: the services' stable address, on a VM of its own (README: Frontman) ------------------
module "frontman" {
  source       = "../../modules/gcp-frontman"
  count        = local.frontman ? 1 : 0
  project_id   = var.gcp_project_id
  region       = var.gcp_region
  zone         = var.gcp_zone
  network      = google_compute_network.ums.id
  subnetwork   = google_compute_subnetwork.ums.id
  services     = var.frontman_services
  client_cidrs = var.frontman_client_cidrs
  host_cidrs   = local.host_cidrs
  # It reaches the broker under its name, which the broker's private zone resolves to its internal addresses
  # in this network (their subnet is among the broker's client_cidrs already); the external ones too.
  broker_cidrs              = [for a in concat(module.broker.internal_addresses, module.broker.addresses) : "${a}/32"]
  nats_url                  = local.nats_url
  nats_ca_pem               = local.ca_pem
  nats_credential_secret_id = google_secret_manager_secret.this["ums-frontman-nats"].secret_id
  release_url               = var.release_url
  release_sha256            = var.release_sha256
}
