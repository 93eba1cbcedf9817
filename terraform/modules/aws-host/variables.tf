variable "agent_id" {
  description = "The agent's id (UMS_AGENT_ID), e.g. aws-us-east-1-1; also names the instance and its role."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.agent_id))
    error_message = "agent_id must be lowercase letters, digits and dashes (at most 63)."
  }
}

variable "region" {
  description = "The AWS region of the host (UMS_REGION), e.g. us-east-1."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the host's security group belongs to."
  type        = string
}

variable "subnet_id" {
  description = "The subnet the host runs in."
  type        = string
}

variable "instance_type" {
  description = "The EC2 instance type (x86_64: the CRIU build UMS side-loads is amd64)."
  type        = string
  default     = "m6i.large"
}

variable "ami_id" {
  description = "The AMI: Debian 13 (trixie) amd64, which ships Node 20 and a CRIU recent enough for host-setup.sh. null: the newest official Debian 13 AMI."
  type        = string
  default     = null
}

variable "root_volume_gib" {
  description = "Size of the root volume: images, containers and checkpoints staged on the way."
  type        = number
  default     = 50
  validation {
    condition     = var.root_volume_gib >= 20
    error_message = "root_volume_gib must be at least 20."
  }
}

variable "bucket_arn" {
  description = "ARN of this cloud's checkpoint bucket (module aws-bucket, output arn): the only bucket the host may write."
  type        = string
}

variable "bucket_objects_arn" {
  description = "ARN pattern of the objects under UMS's prefix (module aws-bucket, output objects_arn)."
  type        = string
}

variable "bucket_prefix" {
  description = "UMS's prefix in the bucket (module aws-bucket's prefix), for the ListBucket condition."
  type        = string
  default     = "ums"
}

variable "store_url" {
  description = "This host's store URL (module aws-bucket, output store_url)."
  type        = string
}

variable "nats_url" {
  description = "The broker's URL(s), tls://host:4222 (module gcp-nats-broker, output url)."
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

variable "nats_credential_secret_arn" {
  description = "ARN of the Secrets Manager secret holding this agent's broker credential ({\"principal\":\"agent-<id>\",\"seed\":\"SU...\"}). Created and filled outside Terraform so the seed never enters its state (terraform/README.md)."
  type        = string
  validation {
    condition     = startswith(var.nats_credential_secret_arn, "arn:aws:secretsmanager:")
    error_message = "nats_credential_secret_arn must be a Secrets Manager ARN."
  }
}

variable "peer_cidrs" {
  description = "CIDRs of the deployment's other hosts (public /32s across clouds, or private ranges over a VPN): the only sources allowed to reach this host's page relay (post-copy)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.peer_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "peer_cidrs must be CIDRs, and not 0.0.0.0/0: the page relay is for the deployment's own hosts."
  }
}

variable "post_copy" {
  description = "Take part in post-copy: the agent announces its page relay at the host's public IP (an Elastic IP keeps it stable)."
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
