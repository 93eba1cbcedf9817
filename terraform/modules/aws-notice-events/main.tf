# EC2's notices, sent by EventBridge to the cloud notice ingress (functions/cloud-notice-ingress.ts, deployed by
# gcp-functions with cloud_notices) through an API destination: EventBridge POSTs each matching event as its own
# JSON (no input transformer), which the ingress reads as it is. Rules are regional: one module per region with
# UMS hosts.
locals {
  # What the ingress reads (functions/cloud-notices/aws-eventbridge.ts; test/unit/terraform-static.test.ts compares
  # them): EC2's spot warning and rebalance advice, and AWS Health's scheduled changes of EC2 instances.
  ec2_detail_types = ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"]
  health_event_types = [
    "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
    "AWS_EC2_INSTANCE_RETIREMENT_EXPEDITED",
    "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED",
    "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_EXPEDITED",
    "AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED",
    "AWS_EC2_INSTANCE_REBOOT_FLEXIBLE_MAINTENANCE_SCHEDULED",
    "AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED",
    "AWS_EC2_INSTANCE_STOP_SCHEDULED",
    "AWS_EC2_INSTANCE_TERMINATION_SCHEDULED",
    "AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED",
    "AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED",
    "AWS_EC2_PERSISTENT_INSTANCE_POWER_MAINTENANCE_SCHEDULED",
  ]
  only_hosts = length(var.instance_ids) > 0
  # Only the UMS hosts' instances when they are listed: EC2's events name them in detail, AWS Health's in resources.
  event_patterns = {
    ec2 = jsonencode(merge(
      { source = ["aws.ec2"], "detail-type" = local.ec2_detail_types },
      { for k, v in { detail = { "instance-id" = var.instance_ids } } : k => v if local.only_hosts },
    ))
    health = jsonencode(merge(
      { source = ["aws.health"], "detail-type" = ["AWS Health Event"], detail = { service = ["EC2"], eventTypeCode = local.health_event_types } },
      { for k, v in { resources = var.instance_ids } : k => v if local.only_hosts },
    ))
  }
}

# The notice key as the connection's API key: EventBridge keeps it in a Secrets Manager secret of its own and
# sends it as X-UMS-Notice-Key with every request; the ingress checks it before it reads anything. Terraform's
# state holds it too, as every argument: keep the state encrypted.
resource "aws_cloudwatch_event_connection" "ingress" {
  name               = "${var.name}-ingress"
  description        = "The UMS cloud notice ingress (its notice key)"
  authorization_type = "API_KEY"
  auth_parameters {
    api_key {
      key   = "X-UMS-Notice-Key"
      value = var.notice_key
    }
  }
}

resource "aws_cloudwatch_event_api_destination" "ingress" {
  name                             = "${var.name}-ingress"
  description                      = "The UMS cloud notice ingress"
  invocation_endpoint              = "${trimsuffix(var.ingress_url, "/")}/eventbridge"
  http_method                      = "POST"
  invocation_rate_limit_per_second = 10
  connection_arn                   = aws_cloudwatch_event_connection.ingress.arn
}

resource "aws_cloudwatch_event_rule" "notices" {
  for_each      = local.event_patterns
  name          = "${var.name}-${each.key}"
  description   = "EC2 notices for the UMS cloud notice ingress (${each.key})"
  event_pattern = each.value
  tags          = var.tags
}

resource "aws_cloudwatch_event_target" "ingress" {
  for_each = aws_cloudwatch_event_rule.notices
  rule     = each.value.name
  arn      = aws_cloudwatch_event_api_destination.ingress.arn
  role_arn = aws_iam_role.invoke.arn
  # A notice an hour old is moot (a spot instance has two minutes).
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 185
  }
}

# EventBridge invokes the API destination with this role, which may do nothing else.
data "aws_iam_policy_document" "trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "invoke" {
  statement {
    sid       = "InvokeTheIngress"
    actions   = ["events:InvokeApiDestination"]
    resources = [aws_cloudwatch_event_api_destination.ingress.arn]
  }
}

resource "aws_iam_role" "invoke" {
  name               = "${var.name}-invoke"
  assume_role_policy = data.aws_iam_policy_document.trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "invoke" {
  name   = "invoke-the-ingress"
  role   = aws_iam_role.invoke.id
  policy = data.aws_iam_policy_document.invoke.json
}
