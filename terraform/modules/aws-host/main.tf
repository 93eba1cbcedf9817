locals {
  # Post-copy goes through the runtime shim Podman is given: a Docker host announces no page relay and opens none.
  page_relay  = var.post_copy && var.engine == "podman"
  list_prefix = var.bucket_prefix == "" ? "*" : "${var.bucket_prefix}/*"
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
  count  = var.post_copy ? 1 : 0
  domain = "vpc"
  tags   = merge(var.tags, { Name = var.agent_id })
}

module "cloud_init" {
  source = "../agent-cloud-init"

  agent_id           = var.agent_id
  cloud              = "aws"
  region             = var.region
  store_url          = var.store_url
  nats_url           = var.nats_url
  nats_ca_pem        = var.nats_ca_pem
  command_verify_key = var.command_verify_key
  secrets            = { nats_credential = var.nats_credential_secret_arn }
  engine             = var.engine
  page_relay_address = local.page_relay ? aws_eip.this[0].public_ip : null
  page_relay_ports   = var.page_relay_ports
  # Where a frontman reaches the ports this host's containers publish (the same stable public address).
  service_address = var.post_copy ? aws_eip.this[0].public_ip : null
  release_url     = var.release_url
  release_sha256  = var.release_sha256
}

# --- identity: this cloud's bucket (UMS's prefix only) and this agent's secret, nothing else --------------
data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "host" {
  statement {
    sid       = "CheckpointObjects"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = [var.bucket_objects_arn]
  }
  statement {
    sid       = "ListUnderPrefix"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.list_prefix]
    }
  }
  statement {
    sid       = "OwnBrokerCredential"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.nats_credential_secret_arn]
  }
}

resource "aws_iam_role" "this" {
  name               = "ums-agent-${var.agent_id}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "this" {
  name   = "ums-agent"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.host.json
}

# Session Manager for operators instead of SSH: no port 22 open anywhere.
resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.this.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "this" {
  name = "ums-agent-${var.agent_id}"
  role = aws_iam_role.this.name
}

# --- network: nothing in but the page relay from the deployment's hosts --------------------------------
resource "aws_security_group" "this" {
  name        = "ums-agent-${var.agent_id}"
  description = "UMS agent ${var.agent_id}: page relay from the deployment's hosts only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

# The relay's fixed ports (UMS_PAGE_RELAY_PORTS), one per migration leaving at once; only from the peers.
resource "aws_vpc_security_group_ingress_rule" "page_relay" {
  for_each          = local.page_relay ? toset(var.peer_cidrs) : toset([])
  security_group_id = aws_security_group.this.id
  description       = "UMS post-copy page relay from a deployment host"
  ip_protocol       = "tcp"
  from_port         = var.page_relay_ports.from
  to_port           = var.page_relay_ports.to
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "services" {
  for_each          = { for pair in setproduct(var.service_ingress.cidrs, var.service_ingress.ports) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.this.id
  description       = "A port this host's containers publish, from a service's frontman"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

# Out: the broker (4222), the clouds' APIs and stores (443), Debian's mirrors, other hosts' page relays.
resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.this.id
  description       = "outbound"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_instance" "this" {
  ami                    = var.ami_id == null ? data.aws_ami.debian[0].id : var.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.this.id]
  iam_instance_profile   = aws_iam_instance_profile.this.name
  user_data              = module.cloud_init.cloud_config
  # A new cloud-init (new release, new settings) means a new host: the agent's state is its keys, which the
  # deployment re-registers.
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # containers cannot reach the instance's credentials
  }

  root_block_device {
    volume_size = var.root_volume_gib
    volume_type = "gp3"
    encrypted   = true
  }

  tags = merge(var.tags, { Name = var.agent_id })
}

resource "aws_eip_association" "this" {
  count         = var.post_copy ? 1 : 0
  instance_id   = aws_instance.this.id
  allocation_id = aws_eip.this[0].id
}
