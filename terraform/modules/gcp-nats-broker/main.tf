/*
 * One NATS JetStream cluster, in one cloud, that every component reaches over TLS: not a supercluster of
 * per-cloud clusters joined by gateways, and not leaf nodes. UMS's broker traffic is the control plane only
 * (CloudEvents, commands, the saga's KV records; checkpoints go through object storage, pages host to host),
 * so a WAN round trip per message costs little, while every stream and KV bucket has to live in one place
 * anyway for the saga's compare-and-set locks to mean anything. Gateways would add a cluster per cloud to run
 * without moving a single stream closer; leaf nodes would help a host keep working through a WAN cut, but
 * the functions could not reach it then either, and the agent already reconnects forever. The cluster sits
 * next to the functions, its busiest clients.
 */
locals {
  names = [for i, _ in var.zones : "ums-nats-${i}"]
  tag   = "ums-nats"
  # Routes reach each server by a name of its own under dns_name (ums-nats-<i>.<dns_name>, in the private zone),
  # not by address: a route verifies its peer's certificate like a client verifies a server's, and the
  # certificate, made before the first apply, can name *.<dns_name> but not internal addresses known only after.
  route_hosts = [for name in local.names : "${name}.${var.dns_name}"]
  routes      = [for host in local.route_hosts : "${host}:6222"]
}

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = "ums-nats"
  display_name = "UMS broker (NATS)"
}

resource "google_secret_manager_secret_iam_member" "server_key" {
  project   = var.project_id
  secret_id = var.server_key_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_compute_address" "internal" {
  count        = length(var.zones)
  project      = var.project_id
  region       = var.region
  name         = "${local.names[count.index]}-internal"
  address_type = "INTERNAL"
  subnetwork   = var.subnetwork
}

resource "google_compute_address" "external" {
  count   = length(var.zones)
  project = var.project_id
  region  = var.region
  name    = local.names[count.index]
}

module "config" {
  source = "../nats-config"
  count  = length(var.zones)

  server_name     = local.names[count.index]
  routes          = length(var.zones) > 1 ? [for i, r in local.routes : r if i != count.index] : []
  authorization   = var.authorization
  server_cert_pem = var.server_cert_pem
  ca_pem          = var.ca_pem
  key_secret      = { project = var.project_id, secret = var.server_key_secret_id }
}

resource "google_compute_instance" "this" {
  count        = length(var.zones)
  project      = var.project_id
  zone         = var.zones[count.index]
  name         = local.names[count.index]
  machine_type = var.machine_type
  tags         = [local.tag]
  labels       = var.labels

  boot_disk {
    initialize_params {
      image = var.image
      size  = var.disk_gib
      type  = "pd-ssd"
    }
  }

  network_interface {
    network    = var.network
    subnetwork = var.subnetwork
    network_ip = google_compute_address.internal[count.index].address
    access_config {
      nat_ip = google_compute_address.external[count.index].address
    }
  }

  # GCE's Debian images have no cloud-init: the guest agent runs `startup-script` at every boot (idempotent).
  metadata = {
    startup-script         = module.config[count.index].boot_script
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
  }

  service_account {
    email  = google_service_account.this.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot = true
  }

  depends_on = [google_secret_manager_secret_iam_member.server_key]

  lifecycle {
    precondition {
      condition     = length(var.zones) == 1 || var.private_dns
      error_message = "a 3-server broker needs private_dns: its routes reach each server by name (ums-nats-<i>.<dns_name>), which the private zone resolves."
    }
  }
}

resource "google_compute_firewall" "clients" {
  project       = var.project_id
  name          = "ums-nats-clients"
  network       = var.network
  direction     = "INGRESS"
  description   = "UMS broker: TLS clients from the deployment only"
  source_ranges = var.client_cidrs
  target_tags   = [local.tag]
  allow {
    protocol = "tcp"
    ports    = ["4222"]
  }
}

resource "google_compute_firewall" "routes" {
  count       = length(var.zones) > 1 ? 1 : 0
  project     = var.project_id
  name        = "ums-nats-routes"
  network     = var.network
  direction   = "INGRESS"
  description = "UMS broker: cluster routes between its own servers"
  source_tags = [local.tag]
  target_tags = [local.tag]
  allow {
    protocol = "tcp"
    ports    = ["6222"]
  }
}

resource "google_dns_managed_zone" "private" {
  count       = var.private_dns ? 1 : 0
  project     = var.project_id
  name        = "ums-nats-private"
  dns_name    = "${var.dns_name}."
  description = "UMS broker, as the functions reach it inside the VPC"
  visibility  = "private"
  private_visibility_config {
    networks {
      network_url = var.network
    }
  }
}

resource "google_dns_record_set" "private" {
  count        = var.private_dns ? 1 : 0
  project      = var.project_id
  managed_zone = google_dns_managed_zone.private[0].name
  name         = "${var.dns_name}."
  type         = "A"
  ttl          = 60
  rrdatas      = google_compute_address.internal[*].address
}

# Each server's own name, for the cluster's routes (local.route_hosts): the certificate's *.<dns_name> covers it.
resource "google_dns_record_set" "servers" {
  count        = var.private_dns && length(var.zones) > 1 ? length(var.zones) : 0
  project      = var.project_id
  managed_zone = google_dns_managed_zone.private[0].name
  name         = "${local.route_hosts[count.index]}."
  type         = "A"
  ttl          = 60
  rrdatas      = [google_compute_address.internal[count.index].address]
}
