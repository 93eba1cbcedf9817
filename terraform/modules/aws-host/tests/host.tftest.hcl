mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
  }
}

variables {
  agent_id                   = "aws-us-east-1-1"
  region                     = "us-east-1"
  vpc_id                     = "vpc-0123456789abcdef0"
  subnet_id                  = "subnet-0123456789abcdef0"
  bucket_arn                 = "arn:aws:s3:::ums-checkpoints-example"
  bucket_objects_arn         = "arn:aws:s3:::ums-checkpoints-example/ums/*"
  store_url                  = "s3://ums-checkpoints-example/ums"
  nats_url                   = "tls://nats.ums.example:4222"
  nats_ca_pem                = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
  command_verify_key         = "MCowBQYDK2VwAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
  nats_credential_secret_arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:ums-agent-aws-us-east-1-1-AbCdEf"
  peer_cidrs                 = ["20.0.0.4/32", "34.0.0.5/32"]
  release_url                = "https://releases.example/ums-0.1.0.tgz"
  release_sha256             = "0000000000000000000000000000000000000000000000000000000000000000"
}

run "host_with_post_copy" {
  command = apply
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.page_relay) == 2 && alltrue([for r in aws_vpc_security_group_ingress_rule.page_relay : r.from_port == 7700 && r.to_port == 7715 && contains(var.peer_cidrs, r.cidr_ipv4)])
    error_message = "the page relay's fixed ports must be open to each peer host, and only to them"
  }
  assert {
    condition     = aws_instance.this.metadata_options[0].http_tokens == "required" && aws_instance.this.metadata_options[0].http_put_response_hop_limit == 1
    error_message = "IMDSv2 only, out of reach of containers"
  }
  assert {
    condition     = aws_instance.this.ami == "ami-0123456789abcdef0" && aws_instance.this.user_data == module.cloud_init.cloud_config
    error_message = "the instance boots Debian with the agent's cloud-init"
  }
  assert {
    condition     = module.cloud_init.environment["UMS_PAGE_RELAY_ADDRESS"] == aws_eip.this[0].public_ip
    error_message = "the agent announces its page relay at the host's Elastic IP"
  }
  assert {
    condition     = module.cloud_init.environment["UMS_PAGE_RELAY_PORTS"] == "7700-7715" && module.cloud_init.environment["UMS_ENGINE"] == "podman"
    error_message = "the relay listens on exactly the ports the security group opens"
  }
}

run "a_docker_host_opens_no_relay_but_keeps_its_address" {
  command = plan
  variables {
    engine = "docker"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.page_relay) == 0 && length(aws_eip.this) == 1
    error_message = "a Docker host moves stop-and-copy: no relay port opens, its stable address stays (the frontmen's target)"
  }
  assert {
    condition     = !contains(keys(module.cloud_init.environment), "UMS_PAGE_RELAY_ADDRESS") && module.cloud_init.environment["UMS_ENGINE"] == "docker" && strcontains(aws_instance.this.user_data, "UMS_DOCKER_SOCKET")
    error_message = "its agent drives dockerd and announces no relay"
  }
}

run "without_post_copy_nothing_is_open" {
  command = plan
  variables {
    post_copy  = false
    peer_cidrs = []
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.page_relay) == 0 && length(aws_eip.this) == 0
    error_message = "no peer, no open port"
  }
  assert {
    condition     = !contains(keys(module.cloud_init.environment), "UMS_PAGE_RELAY_ADDRESS")
    error_message = "a host without post-copy does not announce a relay"
  }
}

run "the_world_is_not_a_peer" {
  command = plan
  variables {
    peer_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.peer_cidrs]
}
