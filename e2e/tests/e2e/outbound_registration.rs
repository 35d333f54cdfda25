//! End-to-end tests of outbound registration: the `upstream` Trunk registers with a SIPp
//! registrar (`registrar.xml`: 401 with an MD5 challenge, then 200 granting 4 s, three times,
//! then 403), answering with the Trunk's Secret, refreshing before each grant expires and
//! retrying after the refusal; its state shows in metrics and `/status/trunks`; a call the
//! carrier sends to the registered Contact is the Trunk's (routed by its RoutePlan, where a call
//! from the same address without that Contact would be `customers`'); and a draining pod
//! removes its binding (`registrar-unregister.xml`).
//!
//! They share the contract ports: the harness runs them one at a time.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

/// Where the SIPp registrar listens.
const REGISTRAR_PORT: &str = "5070";
/// The Contact the platform registers (its advertised address, the Trunk in `line`).
const CONTACT: &str = "sip:tandem@127.0.0.1:5060;line=upstream";

/// The local configuration with the `upstream` Trunk registering to the SIPp registrar as
/// `tandem` / `reg-secret` in the domain `voice.example.org`. Its calls go to `carrier` (the
/// SIPp carrier on 5090); calls from `customers` go to `elsewhere`, where nobody answers.
fn registering() -> ConfigDir {
    let config = ConfigDir::copy("outbound-registration");
    config.write(
        "trunks.yaml",
        "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: upstream}
spec:
  gatewayRef: {name: local}
  peers:
    - {host: 127.0.0.1, port: 5070, transport: UDP}
  healthCheck: {enabled: false}
  outbound:
    auth: {secretRef: {name: upstream-digest}}
    registration: {enabled: true, registrar: \"sip:127.0.0.1:5070\", expiresSeconds: 60}
    fromDomain: voice.example.org
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier}
spec:
  gatewayRef: {name: local}
  peers:
    - {host: 127.0.0.1, port: 5090, transport: UDP}
  healthCheck: {enabled: false}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: elsewhere}
spec:
  gatewayRef: {name: local}
  peers:
    - {host: 127.0.0.1, port: 5094, transport: UDP}
  healthCheck: {enabled: false}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: local}
  inbound: {allowedCidrs: [127.0.0.0/8]}
",
    );
    config.write(
        "routeplan.yaml",
        "apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: default}
spec:
  gatewayRef: {name: local}
  inboundTrunks: [customers]
  routes:
    - name: everything
      match: {calledPrefix: \"\"}
      targets: [{trunkRef: {name: elsewhere}}]
---
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: from-upstream}
spec:
  gatewayRef: {name: local}
  inboundTrunks: [upstream]
  routes:
    - name: everything
      match: {calledPrefix: \"\"}
      targets: [{trunkRef: {name: carrier}}]
",
    );
    config.write(
        "secrets.yaml",
        "apiVersion: v1
kind: Secret
metadata: {name: upstream-digest}
stringData: {username: tandem, password: reg-secret}
",
    );
    config
}

/// A SIPp registrar on 127.0.0.1:5070 playing `scenario_file` for one registration.
fn registrar(scenario_file: &str, tag: &str) -> Sipp {
    require_sipp();
    let file = scenario(scenario_file);
    let sipp = Sipp::spawn(
        tag,
        &[
            "-sf",
            &file.to_string_lossy(),
            "-i",
            "127.0.0.1",
            "-p",
            REGISTRAR_PORT,
            // Media ports apart from the carrier's (6000) and the caller's (7000).
            "-mp",
            "6400",
            "-m",
            "1",
            "-trace_msg",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    sipp
}

fn state(name: &str) -> f64 {
    scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_trunk_registration_state",
        &["trunk=\"upstream\"", &format!("state=\"{name}\"")],
    )
}

fn attempts() -> f64 {
    scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_trunk_registration_attempts_total",
        &["trunk=\"upstream\""],
    )
}

/// The registration state `/status/trunks` reports for `upstream`.
fn reported_state() -> Option<String> {
    let (_, body) = http_get(SIGNALING_ADMIN, "/status/trunks").ok()?;
    let report: serde_json::Value = serde_json::from_str(&body).ok()?;
    report["trunks"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == "upstream")?["registration"]["state"]
        .as_str()
        .map(str::to_owned)
}

/// The REGISTERs `registrar` received, in order.
fn registers(registrar: &Sipp) -> Vec<String> {
    registrar
        .received()
        .into_iter()
        .filter(|m| m.starts_with("REGISTER "))
        .collect()
}

#[test]
fn a_trunk_registers_refreshes_backs_off_and_takes_calls_to_its_contact() {
    require_sipp();
    let config = registering();
    let mut registrar = registrar("registrar.xml", "registrar");
    let platform = Platform::start_with(config.path());

    wait_until(Duration::from_secs(10), "registered", || {
        state("registered") == 1.0
    });
    assert_eq!(reported_state().as_deref(), Some("Registered"));
    // The registrar granted 4 s: a refresh comes before they pass.
    wait_until(Duration::from_secs(10), "a refresh", || attempts() >= 2.0);

    // The carrier calls the registered Contact from an address that `customers` would
    // otherwise admit: the call is upstream's, routed to `carrier`.
    let caller = Peer::caller("carrier-calls-contact.xml", "3000")
        .tag("contact-caller")
        .trace()
        .args(&["-key", "contact", CONTACT]);
    let carrier = Peer::carrier("carrier.xml").tag("upstream-carrier").trace();
    let (_, carrier) = play(&caller, &carrier, Duration::from_secs(60));
    assert!(
        carrier.received().iter().any(|m| m.starts_with("INVITE ")),
        "the call reached upstream's route"
    );

    // The fourth registration is refused: failed, then retried after back-off.
    wait_until(Duration::from_secs(30), "registration failed", || {
        state("failed") == 1.0
    });
    assert_eq!(state("registered"), 0.0);
    assert_eq!(reported_state().as_deref(), Some("Failed"));
    assert!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_trunk_registration_failures_total",
            &["trunk=\"upstream\"", "reason=\"refused\""]
        ) >= 1.0
    );
    let refused_at = attempts();
    wait_until(Duration::from_secs(15), "a retry after back-off", || {
        attempts() > refused_at
    });
    registrar.assert_success(Duration::from_secs(10));

    let registers = registers(&registrar);
    assert!(registers.len() >= 7, "{registers:#?}");
    let call_id = header(&registers[0], "Call-ID").unwrap();
    for (i, register) in registers.iter().enumerate() {
        assert!(register.starts_with("REGISTER sip:127.0.0.1:5070 SIP/2.0"));
        assert_eq!(header(register, "Call-ID"), Some(call_id), "one Call-ID");
        for name in ["From", "To"] {
            let value = header(register, name).unwrap();
            assert!(value.contains("<sip:tandem@voice.example.org>"), "{value}");
        }
        assert_eq!(
            header(register, "Contact"),
            Some(format!("<{CONTACT}>").as_str())
        );
        assert_eq!(header(register, "Expires"), Some("60"));
        // Every other REGISTER answers a challenge.
        assert_eq!(
            header(register, "Authorization").is_some(),
            i % 2 == 1 && i < 6,
            "{register}"
        );
    }
    let log = platform.log();
    assert!(!log.contains("reg-secret"), "the password in the log");
}

#[test]
fn a_draining_pod_removes_its_binding() {
    require_sipp();
    let config = registering();
    let mut registrar = registrar("registrar-unregister.xml", "registrar-unregister");
    let mut platform = Platform::start_with(config.path());
    wait_until(Duration::from_secs(10), "registered", || {
        state("registered") == 1.0
    });
    platform.process().signal("TERM");
    registrar.assert_success(Duration::from_secs(15));
    let registers = registers(&registrar);
    let expires: Vec<&str> = registers
        .iter()
        .map(|r| header(r, "Expires").unwrap_or("none"))
        .map(|e| if e == "0" { "0" } else { "kept" })
        .collect();
    assert_eq!(expires, ["kept", "kept", "0", "0"]);
}

#[test]
fn a_trunk_that_stops_registering_removes_its_binding() {
    require_sipp();
    let config = registering();
    let mut registrar = registrar("registrar-unregister.xml", "registrar-reload");
    let _platform = Platform::start_with(config.path());
    wait_until(Duration::from_secs(10), "registered", || {
        state("registered") == 1.0
    });
    // The configuration is reloaded with the registration switched off.
    let trunks = config.read("trunks.yaml").replace(
        "registration: {enabled: true,",
        "registration: {enabled: false,",
    );
    config.write("trunks.yaml", &trunks);
    registrar.assert_success(Duration::from_secs(20));
    let registers = registers(&registrar);
    assert_eq!(
        header(&registers[2], "Expires"),
        Some("0"),
        "{registers:#?}"
    );
    wait_until(Duration::from_secs(5), "no registration reported", || {
        reported_state().is_none()
    });
}
