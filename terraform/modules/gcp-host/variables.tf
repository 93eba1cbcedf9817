variable "project_id" {
  description = "The GCP project the host runs in."
  type        = string
}

variable "agent_id" {
  description = "The agent's id (UMS_AGENT_ID), e.g. gcp-us-central1-1; also names the instance and its service account."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.agent_id))
    error_message = "agent_id must be lowercase letters, digits and dashes (at most 63)."
  }
}

variable "region" {
  description = "The region (UMS_REGION), e.g. us-central1."
  type        = string
}

variable "zone" {
  description = "The zone the instance runs in, e.g. us-central1-a."
  type        = string
}

variable "network" {
  description = "The VPC network (self link or name)."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  description = "The subnetwork (self link or name); null: the network's auto subnet in the region."
  type        = string
  default     = null
}

variable "machine_type" {
  description = "The machine type (x86_64)."
  type        = string
  default     = "n2-standard-2"
}

variable "image" {
  description = "The boot image: Debian 13 ships Node 20 and a CRIU recent enough for host-setup.sh."
  type        = string
  default     = "debian-cloud/debian-13"
}

variable "boot_disk_gib" {
  description = "Size of the boot disk: images, containers and checkpoints staged on the way."
  type        = number
  default     = 50
  validation {
    condition     = var.boot_disk_gib >= 20
    error_message = "boot_disk_gib must be at least 20."
  }
}

variable "bucket" {
  description = "This cloud's checkpoint bucket (module gcp-bucket, output bucket): the only bucket the host may write."
  type        = string
}

variable "bucket_prefix" {
  description = "UMS's prefix in the bucket: the IAM condition limits the host to objects under it."
  type        = string
  default     = "ums"
}

variable "store_url" {
  description = "This host's store URL (module gcp-bucket, output store_url)."
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

variable "nats_credential_secret_id" {
  description = "Secret Manager secret id (in project_id) of this agent's broker credential; its versions are added outside Terraform so the seed never enters its state."
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
  description = "Take part in post-copy: the agent announces its page relay at the host's static external IP."
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

variable "labels" {
  description = "Labels for every resource that takes them."
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
