mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_cloudwatch_event_api_destination" {
    defaults = { arn = "arn:aws:events:us-east-1:111122223333:api-destination/ums-cloud-notices-ingress/0a1b2c3d" }
  }
}

variables {
  ingress_url  = "https://ums-cloud-notice-ingress-abc123-uc.a.run.app/"
  notice_key   = "0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
  instance_ids = ["i-0abcdef1234567890"]
}

# One plan run: each run starts the aws provider again (seconds each), and a plan shows every input here.
# (Without instance_ids, and the inputs' validation, are not run here for the same reason.)
run "sends_the_hosts_ec2_notices_to_the_ingress_with_the_key" {
  command = plan
  assert {
    condition     = aws_cloudwatch_event_api_destination.ingress.invocation_endpoint == "https://ums-cloud-notice-ingress-abc123-uc.a.run.app/eventbridge" && aws_cloudwatch_event_api_destination.ingress.http_method == "POST"
    error_message = "EventBridge must POST to the ingress's /eventbridge route"
  }
  assert {
    condition     = aws_cloudwatch_event_connection.ingress.authorization_type == "API_KEY" && one(one(aws_cloudwatch_event_connection.ingress.auth_parameters).api_key).key == "X-UMS-Notice-Key"
    error_message = "the connection sends the notice key as X-UMS-Notice-Key (the header the ingress checks)"
  }
  assert {
    condition     = jsondecode(aws_cloudwatch_event_rule.notices["ec2"].event_pattern) == { source = ["aws.ec2"], "detail-type" = ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"], detail = { "instance-id" = ["i-0abcdef1234567890"] } }
    error_message = "the EC2 rule takes the spot warning and the rebalance advice of the hosts' instances only"
  }
  assert {
    condition     = jsondecode(aws_cloudwatch_event_rule.notices["health"].event_pattern).source == ["aws.health"] && jsondecode(aws_cloudwatch_event_rule.notices["health"].event_pattern).resources == ["i-0abcdef1234567890"] && contains(jsondecode(aws_cloudwatch_event_rule.notices["health"].event_pattern).detail.eventTypeCode, "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED")
    error_message = "the Health rule takes the EC2 scheduled changes of the hosts' instances only"
  }
  assert {
    condition     = alltrue([for t in aws_cloudwatch_event_target.ingress : one(t.retry_policy).maximum_event_age_in_seconds == 3600])
    error_message = "retries stop after an hour: a notice is moot by then"
  }
  assert {
    condition     = one(data.aws_iam_policy_document.invoke.statement).actions == toset(["events:InvokeApiDestination"])
    error_message = "EventBridge's role may only invoke the API destination"
  }
}
