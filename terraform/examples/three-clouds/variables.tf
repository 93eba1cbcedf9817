variable "gcp_project_id" {
  description = "The GCP project (broker, functions, bridge, the GCP host and bucket)."
  type        = string
}

variable "gcp_region" {
  description = "The GCP region."
  type        = string
  default     = "us-central1"
}

variable "gcp_zone" {
  description = "The GCP zone of the host and the broker."
  type        = string
  default     = "us-central1-a"
}

variable "broker_zones" {
  description = "The broker's zones, one server each: 1 (null: gcp_zone) or 3 for a JetStream cluster whose streams keep 3 copies (provision them with --replicas from the stream_replicas output; the certificate must also name *.<broker_dns_name> and allow clientAuth: terraform/README.md, step 3)."
  type        = list(string)
  default     = null
}

variable "azure_subscription_id" {
  description = "The Azure subscription."
  type        = string
}

variable "azure_location" {
  description = "The Azure region."
  type        = string
  default     = "eastus"
}

variable "name" {
  description = "A short lowercase name for the deployment: prefixes the buckets, the storage account and the Key Vault (globally unique names)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.name))
    error_message = "name must be 3-12 lowercase letters and digits, starting with a letter."
  }
}

variable "broker_dns_name" {
  description = "The broker's DNS name (in its certificate's SANs), e.g. nats.ums.example.com."
  type        = string
}

variable "broker_cert_pem_file" {
  description = "Path of the broker's certificate (PEM, public)."
  type        = string
}

variable "broker_ca_pem_file" {
  description = "Path of the CA certificate that signed it (PEM, public)."
  type        = string
}

variable "credentials_dir" {
  description = "The directory `node dist/infra/deploy-credentials.js create` wrote (only its public files are read: authorization.conf, command-verify-key.txt)."
  type        = string
}

variable "operator_cidrs" {
  description = "Where operators run `ums` from (client port 4222 of the broker)."
  type        = list(string)
}

variable "release_url" {
  description = "HTTPS URL of the UMS release tarball the hosts install."
  type        = string
}

variable "release_sha256" {
  description = "SHA-256 of the release tarball."
  type        = string
}

variable "functions_source_object" {
  description = "The functions' source archive in the source bucket (terraform/scripts/package-functions.sh), e.g. ums-functions-<sha>.zip."
  type        = string
}

variable "bridge_image" {
  description = "The trigger bridge's image in Artifact Registry."
  type        = string
}

variable "admin_ssh_public_key" {
  description = "SSH public key of the Azure VM's administrator (Azure requires one)."
  type        = string
}

variable "aws_region" {
  description = "The AWS region of the AWS host and bucket."
  type        = string
  default     = "us-east-1"
}

variable "aws_availability_zone" {
  description = "The availability zone of the AWS host's subnet."
  type        = string
  default     = "us-east-1a"
}

variable "frontman_services" {
  description = "The services a frontman fronts (the frontman modules' input services): container, protocol (http|tcp), port (the host port it publishes on every host), listen_port and hold_seconds (optional). Empty: no frontman."
  type = list(object({
    container    = string
    protocol     = string
    port         = number
    listen_port  = optional(number)
    hold_seconds = optional(number)
  }))
  default = []
}

variable "frontman_cloud" {
  description = "Where the frontman runs when frontman_services is not empty: gcp (module gcp-frontman), azure (azure-frontman) or aws (aws-frontman). Put it near the services' clients; it forwards to the hosts of all three clouds either way."
  type        = string
  default     = "gcp"
  validation {
    condition     = contains(["gcp", "azure", "aws"], var.frontman_cloud)
    error_message = "frontman_cloud must be gcp, azure or aws."
  }
}

variable "frontman_client_cidrs" {
  description = "Who may reach the frontman's listen ports (its services' clients); required when frontman_services is not empty (no silent 0.0.0.0/0)."
  type        = list(string)
  default     = []
}

variable "cloud_notice_key" {
  description = "The notice key (32+ printable characters, e.g. `head -c 32 /dev/urandom | base64`): with it, the clouds' event services send their notices about the hosts' VMs to the functions' notice ingress (Event Grid, Eventarc, EventBridge); null: they do not."
  type        = string
  default     = null
  sensitive   = true
}
