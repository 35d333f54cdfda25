//! YAML fixtures through `ConfigSet` and through the CRDs' CEL rules.
//!
//! Every file under `fixtures/invalid/` declares what must go wrong in its leading comments:
//! `# expect: <field path or -> | <message fragment>` for each error `ConfigSet` must report
//! (no more, no fewer), and `# cel: <message fragment>` for each failure the CRD's CEL rules
//! must report (none when absent). Files under `fixtures/valid/` must load together and pass
//! every CEL rule.

#![allow(clippy::unwrap_used)] // Helpers outside #[test] fns unwrap too.

mod common;

use std::borrow::Cow;

use tandem_api::config::ConfigError;
use tandem_api::{ConfigSet, Validate};

struct Expected {
    path: Option<String>,
    message: String,
}

fn expectations(text: &str) -> (Vec<Expected>, Vec<String>) {
    let mut errors = Vec::new();
    let mut cel = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(rest) = line.strip_prefix("# expect:") {
            let (path, message) = rest.split_once('|').expect("expect: <path> | <message>");
            let path = path.trim();
            errors.push(Expected {
                path: (path != "-").then(|| path.to_owned()),
                message: message.trim().to_owned(),
            });
        } else if let Some(rest) = line.strip_prefix("# cel:") {
            cel.push(rest.trim().to_owned());
        }
    }
    (errors, cel)
}

fn matches(error: &ConfigError, expected: &Expected) -> bool {
    error.path == expected.path && error.message.contains(&expected.message)
}

#[test]
fn invalid_fixtures_report_the_expected_errors() {
    let files = common::read_manifests(&common::fixtures("invalid"));
    let mut failures = Vec::new();
    for (name, text) in &files {
        let (expected, expected_cel) = expectations(text);
        assert!(!expected.is_empty(), "{name} declares no `# expect:` line");

        let errors = match ConfigSet::from_documents(&[(name.clone(), text.clone())]) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without error"));
                continue;
            }
            Err(errors) => errors,
        };
        for error in &errors {
            assert_eq!(&error.source, name, "errors name their source");
        }
        let mut unmatched: Vec<&ConfigError> = errors.iter().collect();
        for want in &expected {
            match unmatched.iter().position(|e| matches(e, want)) {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => failures.push(format!(
                    "{name}: no error at {:?} containing {:?}; got:\n  {}",
                    want.path,
                    want.message,
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n  ")
                )),
            }
        }
        for extra in unmatched {
            failures.push(format!("{name}: unexpected error: {extra}"));
        }

        let cel = common::cel_failures(text);
        let mut unmatched_cel: Vec<&String> = cel.iter().collect();
        for want in &expected_cel {
            match unmatched_cel.iter().position(|m| m.contains(want.as_str())) {
                Some(i) => {
                    unmatched_cel.remove(i);
                }
                None => failures.push(format!("{name}: CEL did not report {want:?}; got {cel:?}")),
            }
        }
        for extra in unmatched_cel {
            failures.push(format!("{name}: unexpected CEL failure: {extra}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn error_display_names_source_document_object_and_field() {
    let text =
        std::fs::read_to_string(common::fixtures("invalid/routeplan-missing-trunk.yaml")).unwrap();
    let errors = ConfigSet::from_documents(&[("plans.yaml".into(), text)]).unwrap_err();
    let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        rendered.contains(
            &"plans.yaml (document 0): RoutePlan default/default: spec.inboundTrunks[0]: Trunk \"pbx\" not found in namespace \"default\"".to_owned()
        ),
        "{rendered:#?}"
    );
}

#[test]
fn errors_from_several_sources_are_all_reported() {
    let gateway =
        std::fs::read_to_string(common::fixtures("invalid/gateway-bad-port-range.yaml")).unwrap();
    let kind = std::fs::read_to_string(common::fixtures("invalid/unknown-kind.yaml")).unwrap();
    let errors = ConfigSet::from_documents(&[("a.yaml".into(), gateway), ("b.yaml".into(), kind)])
        .unwrap_err();
    let sources: Vec<&str> = errors.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["a.yaml", "a.yaml", "b.yaml"]);
    assert_eq!(errors[2].kind, None);
    assert_eq!(errors[0].kind.as_deref(), Some("Gateway"));
}

#[test]
fn valid_fixtures_load_together() {
    let files = common::read_manifests(&common::fixtures("valid"));
    let set = match ConfigSet::from_documents(&files) {
        Ok(set) => set,
        Err(errors) => panic!(
            "valid fixtures rejected:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    for (name, text) in &files {
        assert_eq!(common::cel_failures(text), Vec::<String>::new(), "{name}");
    }
    assert_eq!(set.gateways().count(), 3);
    assert_eq!(set.trunks().count(), 2);
    assert_eq!(set.route_plans().count(), 2);
    for (_, gateway) in set.gateways() {
        assert_eq!(gateway.validate(), Ok(()));
    }
}

#[test]
fn valid_fixtures_defaults() {
    let set =
        ConfigSet::from_documents(&common::read_manifests(&common::fixtures("valid"))).unwrap();
    let hostnet = set.gateway("hostnet").unwrap();
    assert_eq!(hostnet.spec.signaling.replicas, 2);
    assert_eq!(hostnet.spec.drain_timeout_seconds, 3600);
    assert_eq!(
        (
            hostnet.spec.media.rtp_port_range.min,
            hostnet.spec.media.rtp_port_range.max
        ),
        (20000, 29999)
    );
    assert_eq!(hostnet.metadata.namespace.as_deref(), Some("default"));

    let pbx = set.trunk("pbx").unwrap();
    assert_eq!(pbx.spec.peers.len(), 0);
    assert!(pbx.spec.health_check.enabled);
    assert_eq!(pbx.spec.health_check.interval_seconds, 30);

    let carrier = set.trunk("carrier").unwrap();
    assert_eq!(carrier.spec.peers[2].priority, 2);
    assert_eq!(carrier.spec.peers[2].weight, 0);

    let plan = set.route_plan("carrier-routing").unwrap();
    assert_eq!(plan.spec.failover_codes, [408, 480, 500, 502, 503, 504]);
    assert_eq!(plan.spec.default_action.reject.code, 404);
    assert_eq!(plan.spec.default_action.reject.reason, "No Route");
    assert_eq!(plan.spec.routes[0].matcher.called_prefix, "");
    assert_eq!(plan.spec.routes[0].targets[0].priority, 1);
    assert_eq!(plan.spec.routes[0].targets[0].weight, 100);
}

#[test]
fn gateway_view_and_compiled_rules() {
    let set =
        ConfigSet::from_documents(&common::read_manifests(&common::fixtures("valid"))).unwrap();
    let core = set.for_gateway("core").unwrap();
    let trunks: Vec<&str> = core.trunks.iter().map(|t| t.name()).collect();
    assert_eq!(trunks, ["carrier", "pbx"]);
    assert_eq!(core.route_plans.len(), 2);
    assert_eq!(
        core.route_plan_for_trunk("pbx").unwrap().name(),
        "pbx-routing"
    );
    assert_eq!(
        core.route_plan_for_trunk("carrier").unwrap().name(),
        "carrier-routing"
    );
    let sriov = set.for_gateway("sriov").unwrap();
    assert!(sriov.trunks.is_empty() && sriov.route_plans.is_empty());
    assert!(set.for_gateway("nowhere").is_none());

    let carrier = core.trunk("carrier").unwrap();
    assert_eq!(carrier.normalize_called("0123456789"), "+33123456789");
    assert_eq!(carrier.normalize_called("+330123456789"), "+33123456789");
    assert_eq!(carrier.normalize_calling("0044207946000"), "+44207946000");
    assert!(matches!(
        carrier.normalize_calling("+33123"),
        Cow::Borrowed(_)
    ));
    assert!(carrier.admits("203.0.113.20".parse().unwrap()));
    assert!(carrier.admits("203.0.113.99".parse().unwrap()));
    assert!(carrier.admits("2001:db8::20".parse().unwrap()));
    assert!(!carrier.admits("198.51.100.1".parse().unwrap()));

    let pbx = core.trunk("pbx").unwrap();
    assert!(pbx.admits("192.0.2.200".parse().unwrap()));
    assert!(pbx.admits("::ffff:192.0.2.7".parse().unwrap()));
    assert!(pbx.admits("198.51.100.42".parse().unwrap()));
    assert!(!pbx.admits("198.51.100.43".parse().unwrap()));

    let plan = core.route_plan_for_trunk("pbx").unwrap();
    let (called, calling) = plan.translate("0123456789", "0198765432");
    assert_eq!(
        (called.as_ref(), calling.as_ref()),
        ("+33123456789", "+33198765432")
    );

    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let route = |called: &str, calling: &str, now: &str| {
        plan.select_route(called, calling, at(now))
            .map(|r| r.name.as_str())
    };
    // Monday 2025-01-06, 10:00 in Paris.
    assert_eq!(
        route("+33123456789", "+33600000000", "2025-01-06T09:00:00Z"),
        Some("office-hours")
    );
    // Monday 23:00 UTC: the night window.
    assert_eq!(
        route("+33123456789", "+33600000000", "2025-01-06T23:00:00Z"),
        Some("night")
    );
    // Saturday noon: neither window; a VIP caller still gets their own route.
    assert_eq!(
        route("+33123456789", "+33198765432", "2025-01-11T12:00:00Z"),
        Some("vip-callers")
    );
    assert_eq!(
        route("+33123456789", "+33600000000", "2025-01-11T12:00:00Z"),
        Some("fallback")
    );
    assert_eq!(route("+4420", "", "2025-01-11T12:00:00Z"), Some("fallback"));
}
