variables {
  server_name   = "nats-0"
  authorization = "authorization: {\"users\": []}"
}

run "single_server_has_no_cluster_block" {
  command = plan
  assert {
    condition     = !strcontains(output.nats_conf, "cluster {") && strcontains(output.nats_conf, "key_file: \"/run/ums-nats/server.key\"")
    error_message = "a single server renders TLS and no cluster"
  }
}

run "cluster_routes_are_rendered" {
  command = plan
  variables {
    routes = ["10.0.0.3:6222", "10.0.0.4:6222"]
  }
  assert {
    condition     = strcontains(output.nats_conf, "\"nats-route://10.0.0.3:6222\"") && strcontains(output.nats_conf, "verify: true")
    error_message = "routes are rendered, verified with the CA"
  }
}

run "a_seed_is_refused" {
  command = plan
  variables {
    authorization = "authorization: {\"users\": [{\"nkey\": \"SUAAAA\"}]}"
  }
  expect_failures = [var.authorization]
}
