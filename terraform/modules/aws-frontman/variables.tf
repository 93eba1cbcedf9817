variable "frontman_id" {
  description = "The frontman's id (UMS_FRONTMAN_ID); also names its instance, Elastic IP, role and security group."
  type        = string
  default     = "frontman-1"
  validation {
    # Stricter than core/events.ts FrontmanId: it names cloud resources too.
    condition     = can(regex("^[a-z][a-z0-9-]{0,24}$", var.frontman_id))
    error_message = "frontman_id must be lowercase letters, digits and dashes (at most 25), starting with a letter."
  }
}

variable "region" {
  description = "The AWS region of the frontman, e.g. us-east-1 (its Secrets Manager endpoint)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC its security group belongs to."
  type        = string
}

variable "subnet_id" {
  description = "The (public) subnet it runs in."
  type        = string
}

variable "instance_type" {
  description = "The EC2 instance type: a small one does (it proxies and holds requests, nothing more)."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "The AMI: Debian 13 (trixie) amd64, which ships Node 20. null: the newest official Debian 13 AMI."
  type        = string
  default     = null
}

variable "root_volume_gib" {
  description = "Size of the root volume (the release and logs)."
  type        = number
  default     = 20
  validation {
    condition     = var.root_volume_gib >= 10
    error_message = "root_volume_gib must be at least 10."
  }
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

variable "nats_credential_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the frontman principal's broker credential (credentials/frontman.json of deploy-credentials); created and filled outside Terraform so the seed never enters its state."
  type        = string
  validation {
    condition     = startswith(var.nats_credential_secret_arn, "arn:aws:secretsmanager:")
    error_message = "nats_credential_secret_arn must be a Secrets Manager ARN."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
