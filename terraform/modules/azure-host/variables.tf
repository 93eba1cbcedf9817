variable "resource_group_name" {
  description = "The resource group of the host's resources."
  type        = string
}

variable "location" {
  description = "The Azure region (UMS_REGION), e.g. eastus."
  type        = string
}

variable "agent_id" {
  description = "The agent's id (UMS_AGENT_ID), e.g. azure-eastus-1; also names the VM."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.agent_id))
    error_message = "agent_id must be lowercase letters, digits and dashes (at most 63)."
  }
}

variable "subnet_id" {
  description = "The subnet the host's NIC is in."
  type        = string
}

variable "vm_size" {
  description = "The VM size (x86_64)."
  type        = string
  default     = "Standard_D2s_v5"
}

variable "os_disk_gib" {
  description = "Size of the OS disk: images, containers and checkpoints staged on the way."
  type        = number
  default     = 64
  validation {
    condition     = var.os_disk_gib >= 30
    error_message = "os_disk_gib must be at least 30."
  }
}

variable "admin_username" {
  description = "The VM's administrator (Azure requires one; log in with Entra ID / Bastion rather than SSH from outside: no port 22 is open)."
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

variable "storage_account_id" {
  description = "Resource id of this cloud's storage account (module azure-storage, output account_id)."
  type        = string
}

variable "storage_container_id" {
  description = "Resource manager id of the checkpoint container (module azure-storage, output container_id): the host's data role is scoped to it."
  type        = string
}

variable "store_url" {
  description = "This host's store URL (module azure-storage, output store_url)."
  type        = string
}

variable "key_vault_id" {
  description = "The Key Vault (RBAC authorization) holding this host's secrets."
  type        = string
}

variable "key_vault_name" {
  description = "The Key Vault's name (the start script reads https://<name>.vault.azure.net)."
  type        = string
}

variable "nats_credential_secret_name" {
  description = "Name of the Key Vault secret with this agent's broker credential; its value is set outside Terraform so the seed never enters its state."
  type        = string
}

variable "storage_key_secret_name" {
  description = "Name of the Key Vault secret with the storage account key (AZURE_STORAGE_KEY: agents/main.ts signs in to Blob with the account key, not yet with a managed identity)."
  type        = string
}

variable "nats_url" {
  description = "The broker's URL(s), tls://host:4222."
  type        = string
}

variable "nats_ca_pem" {
  description = "The broker's CA certificate (PEM, public)."
  type        = string
}

variable "command_verify_key" {
  description = "The functions' command-signing public key (base64 raw Ed25519, public)."
  type        = string
}

variable "peer_cidrs" {
  description = "CIDRs of the deployment's other hosts: the only sources allowed to reach this host's page relay (post-copy)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.peer_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "peer_cidrs must be CIDRs, and not 0.0.0.0/0: the page relay is for the deployment's own hosts."
  }
}

variable "post_copy" {
  description = "Take part in post-copy: the agent announces its page relay at the host's static public IP."
  type        = bool
  default     = true
}

variable "release_url" {
  description = "HTTPS URL of the UMS release tarball."
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

variable "service_ingress" {
  description = "Who may reach the ports this host's containers publish, and which: the frontmen's addresses (/32s) and every fronted service's published port (any of them may migrate here). Empty: nothing."
  type = object({
    cidrs = list(string)
    ports = list(number)
  })
  default = { cidrs = [], ports = [] }
  validation {
    condition     = alltrue([for c in var.service_ingress.cidrs : can(cidrhost(c, 0))]) && alltrue([for p in var.service_ingress.ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "service_ingress.cidrs must be CIDRs and its ports 1-65535."
  }
}

variable "engine" {
  description = "The container engine the agent drives: podman (post-copy through the runtime shim) or docker (docker.io with dockerd in experimental mode and /etc/criu/runc.conf; stop-and-copy only, so no page relay is announced or opened)."
  type        = string
  default     = "podman"
  validation {
    condition     = contains(["podman", "docker"], var.engine)
    error_message = "engine must be podman or docker."
  }
}

variable "page_relay_ports" {
  description = "The fixed ports the agent's page relay listens on (UMS_PAGE_RELAY_PORTS), one per post-copy migration leaving this host at once: the only ports opened, and only to peer_cidrs."
  type = object({
    from = number
    to   = number
  })
  default = { from = 7700, to = 7715 }
  validation {
    condition     = var.page_relay_ports.from >= 1024 && var.page_relay_ports.to <= 65535 && var.page_relay_ports.from <= var.page_relay_ports.to && var.page_relay_ports.to - var.page_relay_ports.from < 256
    error_message = "page_relay_ports must be a range of at most 256 ports between 1024 and 65535, from <= to."
  }
}
