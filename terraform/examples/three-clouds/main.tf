/*
 * A host in each cloud (Azure eastus, GCP us-central1, AWS us-east-1), a store each, the broker and the
 * functions in GCP: migrations between any two of the three.
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
  aws_agent = "aws-${var.aws_region}-1"
  host_cidrs = {
    azure = "${module.azure_host.public_ip}/32"
    gcp   = "${module.gcp_host.public_ip}/32"
    aws   = "${module.aws_host.public_ip}/32"
  }
  # Each host's page relay opens to the other two.
  peers_of = { for cloud, cidr in local.host_cidrs : cloud => [for other, c in local.host_cidrs : c if other != cloud] }
  # The frontman (README: Frontman), only when services are fronted, in the cloud frontman_cloud names; the
  # hosts let it reach their published ports.
  frontman = length(var.frontman_services) > 0
  # Its address, whichever cloud it is in (at most one of the three modules exists).
  frontman_address = one(concat(module.frontman[*].address, module.azure_frontman[*].address, module.aws_frontman[*].address))
  service_ingress = {
    cidrs = local.frontman ? ["${local.frontman_address}/32"] : []
    ports = distinct([for s in var.frontman_services : s.port])
  }
  # A frontman outside GCP reaches the broker at its public addresses, which must let it in.
  frontman_broker_cidrs = local.frontman && var.frontman_cloud != "gcp" ? ["${local.frontman_address}/32"] : []
  # The clouds' event services' notices, through the ingress (README: Notices from the clouds' event services).
  cloud_notices = var.cloud_notice_key != null
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
  ], local.frontman && var.frontman_cloud == "gcp" ? ["ums-frontman-nats"] : [], local.cloud_notices ? ["ums-cloud-notice-key"] : []))
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
  client_cidrs = concat(values(local.host_cidrs), ["10.8.0.0/28", google_compute_subnetwork.ums.ip_cidr_range], var.operator_cidrs, local.frontman_broker_cidrs)
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
  # Keyless: the functions sign SAS URLs as the Azure identity their Google identity is federated with, and
  # S3 URLs as the AWS role that trusts it.
  azure_federation = {
    client_id = module.functions_azure_identity.client_id
    tenant_id = module.functions_azure_identity.tenant_id
    audience  = module.functions_azure_identity.audience
  }
  aws_web_identity = {
    role_arn = module.functions_aws_role.role_arn
    audience = module.functions_aws_role.audience
  }
  aws_region = var.aws_region
  cloud_notices = local.cloud_notices ? {
    key_secret = google_secret_manager_secret.this["ums-cloud-notice-key"].secret_id
  } : null
}

# The notice key: Event Grid and EventBridge take its value as an argument (so it is in the state either way);
# the ingress reads it from Secret Manager.
resource "google_secret_manager_secret_version" "cloud_notice_key" {
  count       = local.cloud_notices ? 1 : 0
  secret      = google_secret_manager_secret.this["ums-cloud-notice-key"].id
  secret_data = var.cloud_notice_key
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
  peer_cidrs                = local.peers_of["gcp"]
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
  peer_cidrs                  = local.peers_of["azure"]
  release_url                 = var.release_url
  release_sha256              = var.release_sha256
  service_ingress             = local.service_ingress
}

# --- AWS: network, bucket, the broker credential's secret, the host --------------------------------------
resource "aws_vpc" "ums" {
  cidr_block = "10.30.0.0/16"
  tags       = { Name = "ums" }
}

resource "aws_internet_gateway" "ums" {
  vpc_id = aws_vpc.ums.id
}

resource "aws_subnet" "hosts" {
  vpc_id            = aws_vpc.ums.id
  cidr_block        = "10.30.1.0/24"
  availability_zone = var.aws_availability_zone
}

resource "aws_route_table" "hosts" {
  vpc_id = aws_vpc.ums.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.ums.id
  }
}

resource "aws_route_table_association" "hosts" {
  subnet_id      = aws_subnet.hosts.id
  route_table_id = aws_route_table.hosts.id
}

module "aws_bucket" {
  source = "../../modules/aws-bucket"
  name   = "${var.name}-ums-aws"
}

# The functions' AWS role: no access key, it trusts their Google service account (web identity federation);
# it reads (signs URLs for) and deletes under the bucket's UMS prefix, and nothing else.
module "functions_aws_role" {
  source                           = "../../modules/aws-functions-role"
  google_service_account_unique_id = module.functions.functions_service_account_unique_id
  buckets                          = [{ arn = module.aws_bucket.arn, prefix = module.aws_bucket.prefix }]
}

# Created empty; its value is set outside Terraform (README), so the seed never enters the state.
resource "aws_secretsmanager_secret" "agent_nats" {
  name                    = "ums-agent-${local.aws_agent}-nats"
  recovery_window_in_days = 7
}

module "aws_host" {
  source                     = "../../modules/aws-host"
  agent_id                   = local.aws_agent
  region                     = var.aws_region
  vpc_id                     = aws_vpc.ums.id
  subnet_id                  = aws_subnet.hosts.id
  bucket_arn                 = module.aws_bucket.arn
  bucket_objects_arn         = module.aws_bucket.objects_arn
  store_url                  = module.aws_bucket.store_url
  nats_url                   = local.nats_url
  nats_ca_pem                = local.ca_pem
  command_verify_key         = local.verify_key
  nats_credential_secret_arn = aws_secretsmanager_secret.agent_nats.arn
  peer_cidrs                 = local.peers_of["aws"]
  release_url                = var.release_url
  release_sha256             = var.release_sha256
  service_ingress            = local.service_ingress
}

# --- the frontman: the services' stable address, on a VM of its own (README: Frontman) ------------------
module "frontman" {
  source       = "../../modules/gcp-frontman"
  count        = local.frontman && var.frontman_cloud == "gcp" ? 1 : 0
  project_id   = var.gcp_project_id
  region       = var.gcp_region
  zone         = var.gcp_zone
  network      = google_compute_network.ums.id
  subnetwork   = google_compute_subnetwork.ums.id
  services     = var.frontman_services
  client_cidrs = var.frontman_client_cidrs
  host_cidrs   = values(local.host_cidrs)
  # It reaches the broker under its name, which the broker's private zone resolves to its internal addresses
  # in this network (their subnet is among the broker's client_cidrs already); the external ones too.
  broker_cidrs              = [for a in concat(module.broker.internal_addresses, module.broker.addresses) : "${a}/32"]
  nats_url                  = local.nats_url
  nats_ca_pem               = local.ca_pem
  nats_credential_secret_id = google_secret_manager_secret.this["ums-frontman-nats"].secret_id
  release_url               = var.release_url
  release_sha256            = var.release_sha256
}

# Or in Azure (frontman_cloud = "azure"): its broker credential in the Key Vault, set as the agent's is (README).
module "azure_frontman" {
  source                      = "../../modules/azure-frontman"
  count                       = local.frontman && var.frontman_cloud == "azure" ? 1 : 0
  resource_group_name         = azurerm_resource_group.ums.name
  location                    = azurerm_resource_group.ums.location
  subnet_id                   = azurerm_subnet.hosts.id
  admin_ssh_public_key        = var.admin_ssh_public_key
  key_vault_id                = azurerm_key_vault.ums.id
  key_vault_name              = azurerm_key_vault.ums.name
  nats_credential_secret_name = "ums-frontman-nats"
  services                    = var.frontman_services
  client_cidrs                = var.frontman_client_cidrs
  host_cidrs                  = values(local.host_cidrs)
  broker_cidrs                = [for a in module.broker.addresses : "${a}/32"]
  nats_url                    = local.nats_url
  nats_ca_pem                 = local.ca_pem
  release_url                 = var.release_url
  release_sha256              = var.release_sha256
}

# Or in AWS (frontman_cloud = "aws"): its broker credential in Secrets Manager, created empty here.
resource "aws_secretsmanager_secret" "frontman_nats" {
  count                   = local.frontman && var.frontman_cloud == "aws" ? 1 : 0
  name                    = "ums-frontman-nats"
  recovery_window_in_days = 7
}

module "aws_frontman" {
  source                     = "../../modules/aws-frontman"
  count                      = local.frontman && var.frontman_cloud == "aws" ? 1 : 0
  region                     = var.aws_region
  vpc_id                     = aws_vpc.ums.id
  subnet_id                  = aws_subnet.hosts.id
  services                   = var.frontman_services
  client_cidrs               = var.frontman_client_cidrs
  host_cidrs                 = values(local.host_cidrs)
  broker_cidrs               = [for a in module.broker.addresses : "${a}/32"]
  nats_url                   = local.nats_url
  nats_ca_pem                = local.ca_pem
  nats_credential_secret_arn = aws_secretsmanager_secret.frontman_nats[0].arn
  release_url                = var.release_url
  release_sha256             = var.release_sha256
}

# --- the clouds' event services, to the notice ingress (with cloud_notice_key) ---------------------------
# Compute Engine's own notices take the Eventarc route gcp-functions deploys; Azure's and AWS's come from
# Event Grid and EventBridge, for the hosts' VMs only.
module "azure_notices" {
  source              = "../../modules/azure-notice-events"
  count               = local.cloud_notices ? 1 : 0
  subscription_id     = var.azure_subscription_id
  resource_group_name = azurerm_resource_group.ums.name
  ingress_url         = module.functions.cloud_notice_ingress_url
  notice_key          = var.cloud_notice_key
  vm_ids              = [module.azure_host.vm_id]
}

module "aws_notices" {
  source       = "../../modules/aws-notice-events"
  count        = local.cloud_notices ? 1 : 0
  ingress_url  = module.functions.cloud_notice_ingress_url
  notice_key   = var.cloud_notice_key
  instance_ids = [module.aws_host.instance_id]
}
