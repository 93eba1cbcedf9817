/*
 * The frontman on AWS (gcp-frontman's counterpart): the stable address of migratable services, on a small
 * EC2 instance of its own, none of the services' hosts: a host being evacuated would take its frontman with
 * it, and switching DNS or a load balancer cannot hold requests while a service is frozen. Clients point at
 * its Elastic IP; it holds their requests through a migration and forwards them to whichever host runs the
 * service after it (the host's UMS_SERVICE_ADDRESS and the port its container publishes).
 */
locals {
  # Each service's listen port: the one clients use on the frontman's address (by default the published port).
  listen_ports = { for s in var.services : s.container => coalesce(s.listen_port, s.port) }
  # Who may come in and where it may go, one security group rule per (CIDR, port) pair.
  client_rules = { for pair in setproduct(var.client_cidrs, distinct(values(local.listen_ports))) : "${pair[0]}:${pair[1]}" => pair }
  host_rules   = { for pair in setproduct(var.host_cidrs, distinct([for s in var.services : s.port])) : "${pair[0]}:${pair[1]}" => pair }
  broker_rules = { for cidr in var.broker_cidrs : cidr => cidr }
  web_ports    = [80, 443]
}

data "aws_ami" "debian" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account
  filter {
    name   = "name"
    values = ["debian-13-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_eip" "this" {
  domain = "vpc"
  tags   = merge(var.tags, { Name = "ums-${var.frontman_id}" })
}

# The agent hosts' install, secret fetching and boot, with the ums-frontman unit (frontman/main.ts).
module "cloud_init" {
  source = "../agent-cloud-init"

  cloud       = "aws"
  region      = var.region
  nats_url    = var.nats_url
  nats_ca_pem = var.nats_ca_pem
  secrets     = { nats_credential = var.nats_credential_secret_arn }
  log_level   = var.log_level
  frontman = {
    id = var.frontman_id
    # It binds every interface: the Elastic IP is translated to the instance's private address.
    services = [for s in var.services : {
      container    = s.container
      protocol     = s.protocol
      listen       = "0.0.0.0:${local.listen_ports[s.container]}"
      port         = s.port
      hold_seconds = s.hold_seconds
    }]
    hold_seconds  = var.hold_seconds
    drain_seconds = var.drain_seconds
    max_held      = var.max_held
    max_held_mib  = var.max_held_mib
    max_body_kib  = var.max_body_kib
  }
  release_url    = var.release_url
  release_sha256 = var.release_sha256
}

# --- identity: its own broker credential, nothing else -----------------------------------------------------
data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "frontman" {
  statement {
    sid       = "OwnBrokerCredential"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.nats_credential_secret_arn]
  }
}

resource "aws_iam_role" "this" {
  name               = "ums-${var.frontman_id}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "this" {
  name   = "ums-frontman"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.frontman.json
}

# Session Manager for operators instead of SSH: no port 22 open anywhere.
resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.this.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "this" {
  name = "ums-${var.frontman_id}"
  role = aws_iam_role.this.name
}

# --- network: in, the listen ports from the clients; out, the broker, the hosts' published ports, 80/443 ------
# Terraform removes the allow-all egress rule AWS gives a new security group: only the rules below exist.
# (The instance metadata service and the VPC's DNS resolver are not filtered by security groups.)
resource "aws_security_group" "this" {
  name        = "ums-${var.frontman_id}"
  description = "UMS frontman ${var.frontman_id}: its services' clients in; the broker, the hosts and 80/443 out"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each          = local.client_rules
  security_group_id = aws_security_group.this.id
  description       = "A fronted service's listen port, from its clients"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_egress_rule" "broker" {
  for_each          = local.broker_rules
  security_group_id = aws_security_group.this.id
  description       = "The broker's TLS client port"
  ip_protocol       = "tcp"
  from_port         = var.broker_port
  to_port           = var.broker_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "hosts" {
  for_each          = local.host_rules
  security_group_id = aws_security_group.this.id
  description       = "A port the services' containers publish on a deployment host"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_egress_rule" "web" {
  for_each          = toset([for p in local.web_ports : tostring(p)])
  security_group_id = aws_security_group.this.id
  description       = "Debian's mirrors, the release, Secrets Manager"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_instance" "this" {
  ami                    = var.ami_id == null ? data.aws_ami.debian[0].id : var.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.this.id]
  iam_instance_profile   = aws_iam_instance_profile.this.name
  user_data              = module.cloud_init.cloud_config
  # A new cloud-init (new release, new services) means a new instance; its Elastic IP stays.
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = var.root_volume_gib
    volume_type = "gp3"
    encrypted   = true
  }

  tags = merge(var.tags, { Name = "ums-${var.frontman_id}" })
}

resource "aws_eip_association" "this" {
  instance_id   = aws_instance.this.id
  allocation_id = aws_eip.this.id
}
