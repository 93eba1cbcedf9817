# Offline, with a mock aws provider: what the frontman opens, what it may reach, and that it boots as a frontman.
mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
  }
}

variables {
  region                     = "us-east-1"
  vpc_id                     = "vpc-0123456789abcdef0"
  subnet_id                  = "subnet-0123456789abcdef0"
  services                   = [{ container = "web", protocol = "http", port = 8080, listen_port = 80, hold_seconds = 20 }, { container = "db", protocol = "tcp", port = 6379 }]
  client_cidrs               = ["203.0.113.0/24"]
  host_cidrs                 = ["20.0.0.4/32", "34.0.0.5/32", "54.0.0.6/32"]
  broker_cidrs               = ["34.0.0.9/32"]
  nats_url                   = "tls://nats.ums.example:4222"
  nats_ca_pem                = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
  nats_credential_secret_arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:ums-frontman-nats-AbCdEf"
  drain_seconds              = 3
  release_url                = "https://releases.example/ums-0.1.0.tgz"
  release_sha256             = "0000000000000000000000000000000000000000000000000000000000000000"
}

run "frontman_on_ec2" {
  command = apply
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.clients) == 2 && alltrue([for r in aws_vpc_security_group_ingress_rule.clients : r.cidr_ipv4 == "203.0.113.0/24" && contains([80, 6379], r.from_port) && r.to_port == r.from_port])
    error_message = "in: each service's listen port, from the clients only"
  }
  assert {
    condition     = length(aws_vpc_security_group_egress_rule.broker) == 1 && aws_vpc_security_group_egress_rule.broker["34.0.0.9/32"].from_port == 4222 && aws_vpc_security_group_egress_rule.broker["34.0.0.9/32"].to_port == 4222
    error_message = "out: the broker's client port, at the broker only"
  }
  assert {
    condition     = length(aws_vpc_security_group_egress_rule.hosts) == 6 && alltrue([for r in aws_vpc_security_group_egress_rule.hosts : contains(var.host_cidrs, r.cidr_ipv4) && contains([8080, 6379], r.from_port)])
    error_message = "out: the published ports, on the deployment's hosts only"
  }
  assert {
    condition     = length(aws_vpc_security_group_egress_rule.web) == 2 && alltrue([for r in aws_vpc_security_group_egress_rule.web : contains([80, 443], r.from_port) && r.from_port == r.to_port])
    error_message = "out: 80 and 443 for packages, the release and Secrets Manager, nothing else"
  }
  assert {
    condition     = module.cloud_init.unit_name == "ums-frontman" && aws_instance.this.user_data == module.cloud_init.cloud_config && module.cloud_init.environment["UMS_FRONTMAN_ID"] == "frontman-1" && module.cloud_init.environment["UMS_FRONTMAN_DRAIN_SECONDS"] == "3"
    error_message = "the instance boots the frontman's unit with its limits"
  }
  assert {
    condition     = jsondecode(module.cloud_init.environment["UMS_FRONTMAN_SERVICES"]) == [{ container = "web", protocol = "http", listen = "0.0.0.0:80", port = 8080, holdSeconds = 20 }, { container = "db", protocol = "tcp", listen = "0.0.0.0:6379", port = 6379 }]
    error_message = "each service listens on all interfaces at its listen port and forwards to its published port"
  }
  assert {
    condition     = strcontains(module.cloud_init.start_script, "secretsmanager.us-east-1.amazonaws.com") && strcontains(module.cloud_init.start_script, "secret 'arn:aws:secretsmanager:us-east-1:111122223333:secret:ums-frontman-nats-AbCdEf'")
    error_message = "it fetches its own broker credential from Secrets Manager with the instance's role"
  }
  assert {
    condition     = aws_instance.this.metadata_options[0].http_tokens == "required" && aws_instance.this.metadata_options[0].http_put_response_hop_limit == 1
    error_message = "IMDSv2 only"
  }
  assert {
    condition     = output.endpoints == { web = "${aws_eip.this.public_ip}:80", db = "${aws_eip.this.public_ip}:6379" }
    error_message = "the endpoints are the Elastic IP at the listen ports"
  }
}
