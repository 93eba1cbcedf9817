variable "project_id" {
  description = "The GCP project the broker runs in (the functions' project: they are its busiest clients)."
  type        = string
}

variable "region" {
  description = "The broker's region, e.g. us-central1."
  type        = string
}

variable "zones" {
  description = "Zones for the servers, one server per zone: 1 zone = a single server, 3 zones = a 3-server JetStream cluster."
  type        = list(string)
  validation {
    condition     = contains([1, 3], length(var.zones))
    error_message = "zones must list 1 or 3 zones (JetStream's RAFT needs an odd number; 3 survives one loss)."
  }
}

variable "network" {
  description = "The VPC network (self link or name)."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  description = "The subnetwork (self link or name); null: the network's auto subnet."
  type        = string
  default     = null
}

variable "machine_type" {
  description = "The servers' machine type."
  type        = string
  default     = "e2-standard-2"
}

variable "image" {
  description = "The boot image (Debian 13 ships nats-server 2.10)."
  type        = string
  default     = "debian-cloud/debian-13"
}

variable "dns_name" {
  description = "The name clients connect to (an A record per server's external address: output addresses); the certificate must name it, and on a cluster *.<dns_name> too (the routes' names)."
  type        = string
}

variable "server_cert_pem" {
  description = "The servers' certificate (PEM, public): dns_name (and *.dns_name on a cluster) among its SANs, extended key usage serverAuth and clientAuth (a cluster's servers present it to each other on their routes)."
  type        = string
}

variable "ca_pem" {
  description = "The CA that signed it (PEM, public): the clients' UMS_NATS_CA."
  type        = string
}

variable "server_key_secret_id" {
  description = "Secret Manager secret id (in project_id) of the servers' private key; fetched at start onto tmpfs, never in Terraform state or metadata."
  type        = string
}

variable "authorization" {
  description = "The principals' authorization block (authorization.conf from `node dist/infra/deploy-credentials.js`; public nkeys only)."
  type        = string
}

variable "client_cidrs" {
  description = "Who may reach the client port (4222): the deployment's hosts (their public /32s), the functions' and bridge's egress range, operators running `ums`."
  type        = list(string)
  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "client_cidrs must be non-empty CIDRs, and not 0.0.0.0/0."
  }
}

variable "disk_gib" {
  description = "Boot disk size (JetStream's file store lives on it)."
  type        = number
  default     = 20
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "private_dns" {
  description = "Create a private Cloud DNS zone in `network` resolving dns_name to the internal addresses, so the functions and the bridge (Direct VPC egress) reach the broker privately under the certificate's name."
  type        = bool
  default     = true
}
