variable "frontman_id" {
  description = "The frontman's id (UMS_FRONTMAN_ID); also names its VM, public IP, network interface and security group."
  type        = string
  default     = "frontman-1"
  validation {
    # Stricter than core/events.ts FrontmanId: it names cloud resources too.
    condition     = can(regex("^[a-z][a-z0-9-]{0,24}$", var.frontman_id))
    error_message = "frontman_id must be lowercase letters, digits and dashes (at most 25), starting with a letter."
  }
}

variable "resource_group_name" {
  description = "The resource group of the frontman's resources."
  type        = string
}

variable "location" {
  description = "The Azure region, e.g. eastus."
  type        = string
}

variable "subnet_id" {
  description = "The subnet its NIC is in."
  type        = string
}

variable "vm_size" {
  description = "The VM size: a small one does (it proxies and holds requests, nothing more)."
  type        = string
  default     = "Standard_B2s"
}

variable "os_disk_gib" {
  description = "Size of the OS disk (the release and logs)."
  type        = number
  default     = 30
  validation {
    condition     = var.os_disk_gib >= 30
    error_message = "os_disk_gib must be at least 30 (the Debian image's own size)."
  }
}

variable "admin_username" {
  description = "The VM's administrator (Azure requires one; no port 22 is open: use Bastion or `az ssh` with Entra ID)."
  type        = string
  default     = "umsadmin"
}

variable "admin_ssh_public_key" {
  description = "The administrator's SSH public key (public; Azure requires a key or a password)."
  type        = string
  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256) ", var.admin_ssh_public_key))
    error_message = "admin_ssh_public_key must be an OpenSSH public key."
  }
}

variable "key_vault_id" {
  description = "The Key Vault (RBAC authorization) holding the frontman's broker credential."
  type        = string
}

variable "key_vault_name" {
  description = "The Key Vault's name (the start script reads https://<name>.vault.azure.net)."
  type        = string
}

variable "nats_credential_secret_name" {
  description = "Name of the Key Vault secret with the frontman principal's broker credential (credentials/frontman.json of deploy-credentials); its value is set outside Terraform so the seed never enters its state."
  type        = string
}

variable "services" {
  description = <<-EOT
    The services it fronts (UMS_FRONTMAN_SERVICES): container (the container's name, the same on every host),
    protocol (http or tcp), port (the host port the container publishes, on whichever host runs it),
    listen_port (the port clients use on the frontman's address; default: port), hold_seconds (the longest
    a request of this service is held; default: hold_seconds).
  EOT
  type = list(object({
    container    = string
    protocol     = string
    port         = number
    listen_port  = optional(number)
    hold_seconds = optional(number)
  }))
  validation {
    condition     = length(var.services) >= 1 && length(var.services) <= 256 && length(distinct([for s in var.services : s.container])) == length(var.services)
    error_message = "services must list 1 to 256 services, each container once."
  }
  validation {
    condition = alltrue([for s in var.services : contains(["http", "tcp"], s.protocol) && s.port >= 1 && s.port <= 65535 && floor(s.port) == s.port &&
    (s.listen_port == null ? true : s.listen_port >= 1 && s.listen_port <= 65535 && floor(s.listen_port) == s.listen_port)])
    error_message = "each service needs protocol http or tcp and ports from 1 to 65535."
  }
  validation {
    condition     = length(distinct([for s in var.services : coalesce(s.listen_port, s.port)])) == length(var.services)
    error_message = "two services would listen on the same port: set listen_port."
  }
}

variable "client_cidrs" {
  description = "Who may reach the services' listen ports: the clients' CIDRs. Required, with no default: pass [\"0.0.0.0/0\"] yourself for a public service."
  type        = list(string)
  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must be a non-empty list of CIDRs."
  }
}

variable "host_cidrs" {
  description = "The deployment's hosts (their public /32s: their UMS_SERVICE_ADDRESS): the only places it forwards to, on the services' ports."
  type        = list(string)
  validation {
    condition     = length(var.host_cidrs) > 0 && alltrue([for c in var.host_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "host_cidrs must be non-empty CIDRs, and not 0.0.0.0/0."
  }
}

variable "broker_cidrs" {
  description = "The broker's public addresses (/32s: module gcp-nats-broker, output addresses): the only broker it reaches. The broker must let it in: add its address to the broker's client_cidrs."
  type        = list(string)
  validation {
    condition     = length(var.broker_cidrs) > 0 && alltrue([for c in var.broker_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "broker_cidrs must be non-empty CIDRs, and not 0.0.0.0/0."
  }
}

variable "broker_port" {
  description = "The broker's TLS client port."
  type        = number
  default     = 4222
}

variable "nats_url" {
  description = "The broker's URL(s) (NATS_URL), tls://host:4222."
  type        = string
}

variable "nats_ca_pem" {
  description = "The broker's CA certificate (PEM, public; UMS_NATS_CA points at it)."
  type        = string
}

variable "hold_seconds" {
  description = "The longest a request is held while its service is frozen (UMS_FRONTMAN_HOLD_SECONDS); null: frontman/main.ts's default (30)."
  type        = number
  default     = null
}

variable "drain_seconds" {
  description = "The longest a drain waits for requests in flight before the freeze (UMS_FRONTMAN_DRAIN_SECONDS); null: the code's default (5)."
  type        = number
  default     = null
}

variable "max_held" {
  description = "Requests held at once, per service (UMS_FRONTMAN_MAX_HELD); null: the code's default (10000)."
  type        = number
  default     = null
}

variable "max_held_mib" {
  description = "Bytes held at once, per service, in MiB (UMS_FRONTMAN_MAX_HELD_MIB); null: the code's default (64)."
  type        = number
  default     = null
}

variable "max_body_kib" {
  description = "The largest HTTP request body it takes, KiB (UMS_FRONTMAN_MAX_BODY_KIB); null: the code's default (1024)."
  type        = number
  default     = null
}

variable "log_level" {
  description = "The frontman's log level (UMS_LOG_LEVEL): trace, debug, info, warn, error."
  type        = string
  default     = "info"
}

variable "release_url" {
  description = "HTTPS URL of the UMS release tarball (the same release the hosts install)."
  type        = string
}

variable "release_sha256" {
  description = "SHA-256 of the release tarball."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
