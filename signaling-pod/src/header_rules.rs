//! A Trunk's `headerRules` applied to the requests crossing it: on each request received from
//! the trunk before the call reads it (`Inbound`), and on each request sent to it (`Outbound`).
//! The B2BUA builds every request it sends, so no header of the caller's reaches a carrier
//! unless a `Pass` rule of the carrier's Trunk copies it.

use bytes::Bytes;
use tandem_api::compiled::{CompiledHeaderRule, HeaderRules};
use tandem_api::trunk::{HeaderAction, HeaderDirection};
use tandem_sip::message::SipMessage;

/// Applies the rules of the trunk `request` came from.
pub fn on_received(rules: Option<&HeaderRules>, request: &mut SipMessage) {
    apply(rules, HeaderDirection::Inbound, request, None);
}

/// Applies the rules of the trunk `request` goes to; `caller` is the caller's INVITE when
/// `request` is the INVITE that starts the call on that trunk (what `Pass` copies from).
pub fn on_sent(rules: Option<&HeaderRules>, request: &mut SipMessage, caller: Option<&SipMessage>) {
    apply(rules, HeaderDirection::Outbound, request, caller);
}

fn apply(
    rules: Option<&HeaderRules>,
    direction: HeaderDirection,
    request: &mut SipMessage,
    caller: Option<&SipMessage>,
) {
    let Some(rules) = rules else {
        return;
    };
    for rule in rules.iter().filter(|r| r.direction.applies_to(direction)) {
        apply_rule(rule, request, caller);
    }
}

fn apply_rule(rule: &CompiledHeaderRule, request: &mut SipMessage, caller: Option<&SipMessage>) {
    let headers = &mut request.headers;
    let value = || Bytes::from(rule.value.clone().unwrap_or_default());
    match (rule.action, &rule.matches) {
        (HeaderAction::Add, _) => headers.push(&rule.header, value()),
        (HeaderAction::Set, None) => headers.set(&rule.header, value()),
        (HeaderAction::Set, Some(rewrite)) => headers.rewrite(&rule.header, |v| {
            rewrite.apply(std::str::from_utf8(v).ok()?).map(Bytes::from)
        }),
        (HeaderAction::Remove, None) => {
            headers.remove(&rule.header);
        }
        (HeaderAction::Remove, Some(_)) => {
            headers.remove_where(&rule.header, |v| matches(rule, v));
        }
        (HeaderAction::Pass, _) => {
            let Some(caller) = caller else {
                return;
            };
            for v in caller.headers.get_all(&rule.header) {
                if matches(rule, v) {
                    headers.push(&rule.header, v.clone());
                }
            }
        }
    }
}

/// Whether the rule's `match` (when it has one) matches `value`.
fn matches(rule: &CompiledHeaderRule, value: &[u8]) -> bool {
    match &rule.matches {
        None => true,
        Some(rewrite) => std::str::from_utf8(value).is_ok_and(|v| rewrite.pattern().is_match(v)),
    }
}

/// The header rules of a Trunk with `rules` (a JSON list), for tests.
#[cfg(test)]
pub fn rules_of(rules: &str) -> HeaderRules {
    use tandem_api::compiled::CompiledTrunk;
    use tandem_api::trunk::Trunk;
    let json = format!(
        r#"{{"apiVersion": "voice.tandem.dev/v1alpha1", "kind": "Trunk",
                "metadata": {{"name": "carrier"}},
                "spec": {{"gatewayRef": {{"name": "local"}}, "peers": [{{"host": "192.0.2.10"}}],
                          "headerRules": {rules}}}}}"#
    );
    let trunk: Trunk = serde_json::from_str(&json).expect("trunk parses");
    let compiled = CompiledTrunk::new(trunk).expect("trunk is valid");
    compiled
        .header_rules()
        .expect("the trunk has rules")
        .clone()
}

#[cfg(test)]
mod tests {
    use tandem_sip::parse::parse_datagram;

    use super::*;

    fn invite(extra: &str) -> SipMessage {
        let text = format!(
            "INVITE sip:2000@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:1000@192.0.2.1>;tag=a\r\nTo: <sip:2000@192.0.2.10>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse_datagram(Bytes::from(text)).expect("request parses")
    }

    fn values(msg: &SipMessage, name: &str) -> Vec<String> {
        msg.headers
            .get_all(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn add_set_and_remove_apply_in_order_in_their_direction() {
        let rules = rules_of(
            r#"[{"action": "Add", "header": "X-Customer-Id", "value": "acme", "direction": "Outbound"},
                {"action": "Set", "header": "X-Customer-Id", "value": "acme-2", "direction": "Outbound"},
                {"action": "Add", "header": "X-Billing", "value": "b1"},
                {"action": "Remove", "header": "Subject", "direction": "Inbound"}]"#,
        );
        let mut sent = invite("Subject: hello\r\nX-Customer-Id: old\r\n");
        on_sent(Some(&rules), &mut sent, None);
        assert_eq!(values(&sent, "X-Customer-Id"), ["acme-2"]);
        assert_eq!(values(&sent, "X-Billing"), ["b1"]);
        assert_eq!(values(&sent, "Subject"), ["hello"], "an Inbound rule");

        let mut received = invite("Subject: hello\r\n");
        on_received(Some(&rules), &mut received);
        assert!(values(&received, "Subject").is_empty());
        assert_eq!(
            values(&received, "X-Billing"),
            ["b1"],
            "Both applies either way"
        );
        assert!(values(&received, "X-Customer-Id").is_empty());
    }

    #[test]
    fn match_rewrites_with_captures_and_removes_only_matching_values() {
        let rules = rules_of(
            r#"[{"action": "Set", "header": "Diversion", "match": "^<sip:0(\\d+)@", "value": "<sip:+49$1@"},
                {"action": "Remove", "header": "Diversion", "match": "reason=deflection"}]"#,
        );
        let mut msg = invite(
            "Diversion: <sip:0301234@pbx>;reason=busy\r\nDiversion: <sip:+1555@x>;reason=deflection\r\n\
             Diversion: <sip:+1666@y>;reason=no-answer\r\n",
        );
        on_received(Some(&rules), &mut msg);
        assert_eq!(
            values(&msg, "Diversion"),
            [
                "<sip:+49301234@pbx>;reason=busy",
                "<sip:+1666@y>;reason=no-answer"
            ]
        );
    }

    #[test]
    fn pass_copies_the_callers_header_into_the_initial_invite_only() {
        let rules = rules_of(
            r#"[{"action": "Pass", "header": "X-Account", "direction": "Outbound"},
                {"action": "Pass", "header": "History-Info", "match": "index=1$", "direction": "Outbound"}]"#,
        );
        let caller = invite(
            "X-Account: 42\r\nHistory-Info: <sip:a@x>;index=1\r\nHistory-Info: <sip:b@y>;index=1.1\r\n",
        );
        let mut sent = invite("");
        on_sent(Some(&rules), &mut sent, Some(&caller));
        assert_eq!(values(&sent, "X-Account"), ["42"]);
        assert_eq!(values(&sent, "History-Info"), ["<sip:a@x>;index=1"]);

        let mut in_dialog = invite("");
        on_sent(Some(&rules), &mut in_dialog, None);
        assert!(values(&in_dialog, "X-Account").is_empty());
    }

    #[test]
    fn no_rules_change_nothing() {
        let mut msg = invite("X-Any: 1\r\n");
        let before = msg.clone();
        on_sent(None, &mut msg, None);
        on_received(None, &mut msg);
        assert_eq!(msg, before);
    }
}
