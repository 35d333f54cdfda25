//! Caller identity across the B2BUA (RFC 3325 network-asserted identity, RFC 3323 privacy),
//! per the Trunks' `identity.trusted`: a `P-Asserted-Identity` is believed only from a trusted
//! trunk and sent only to one, with the caller's `Privacy`; towards an untrusted trunk a caller
//! asking for privacy is anonymous.

use bytes::Bytes;
use tandem_sip::message::SipMessage;

const ASSERTED: &str = "P-Asserted-Identity";
const PRIVACY: &str = "Privacy";

/// The From URI of a caller who asked for privacy (RFC 3323 §4.1.1.3).
pub const ANONYMOUS: &str = "sip:anonymous@anonymous.invalid";
/// The From display name of a caller who asked for privacy.
pub const ANONYMOUS_DISPLAY: &[u8] = b"\"Anonymous\"";

/// Applies the inbound trunk's trust to the caller's INVITE: an untrusted trunk's asserted
/// identity is not believed.
pub fn on_received(trusted: bool, invite: &mut SipMessage) {
    if !trusted {
        invite.headers.remove(ASSERTED);
    }
}

/// Whether the caller's INVITE asks to hide its identity from untrusted parties (`Privacy`
/// with `id` or `user`, RFC 3325 §9.3, RFC 3323 §4.2).
pub fn wants_privacy(invite: &SipMessage) -> bool {
    invite
        .headers
        .get_all(PRIVACY)
        .flat_map(|value| value.split(|&b| b == b';' || b == b','))
        .any(|token| {
            let token = token.trim_ascii();
            token.eq_ignore_ascii_case(b"id") || token.eq_ignore_ascii_case(b"user")
        })
}

/// Whether the call reaches a trunk with `trusted` as anonymous.
pub fn anonymous_to(trusted: bool, caller: &SipMessage) -> bool {
    !trusted && wants_privacy(caller)
}

/// Copies the caller's asserted identity and privacy into the INVITE to a trusted trunk.
pub fn on_sent(trusted: bool, caller: &SipMessage, invite: &mut SipMessage) {
    if !trusted {
        return;
    }
    for name in [ASSERTED, PRIVACY] {
        let values: Vec<Bytes> = caller.headers.get_all(name).cloned().collect();
        for value in values {
            invite.headers.push(name, value);
        }
    }
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

    #[test]
    fn an_untrusted_trunks_asserted_identity_is_dropped() {
        let mut from_untrusted = invite("P-Asserted-Identity: <sip:+15551000@pbx>\r\n");
        on_received(false, &mut from_untrusted);
        assert!(!from_untrusted.headers.contains(ASSERTED));
        let mut from_trusted = invite("P-Asserted-Identity: <sip:+15551000@carrier>\r\n");
        on_received(true, &mut from_trusted);
        assert!(from_trusted.headers.contains(ASSERTED));
    }

    #[test]
    fn privacy_id_or_user_hides_the_caller_from_untrusted_trunks_only() {
        for (privacy, wanted) in [
            ("Privacy: id\r\n", true),
            ("Privacy: header;user\r\n", true),
            ("Privacy: ID\r\n", true),
            ("Privacy: none\r\n", false),
            ("Privacy: header\r\n", false),
            ("", false),
        ] {
            let caller = invite(privacy);
            assert_eq!(wants_privacy(&caller), wanted, "{privacy:?}");
            assert_eq!(anonymous_to(false, &caller), wanted);
            assert!(!anonymous_to(true, &caller));
        }
    }

    #[test]
    fn a_trusted_trunk_gets_the_asserted_identity_and_privacy() {
        let caller =
            invite("P-Asserted-Identity: <sip:+15551000@c>, <tel:+15551000>\r\nPrivacy: id\r\n");
        let mut to_trusted = invite("");
        on_sent(true, &caller, &mut to_trusted);
        let asserted: Vec<_> = to_trusted.headers.get_all(ASSERTED).collect();
        assert_eq!(asserted, ["<sip:+15551000@c>", "<tel:+15551000>"]);
        assert_eq!(to_trusted.headers.get(PRIVACY).unwrap(), "id");
        let mut to_untrusted = invite("");
        on_sent(false, &caller, &mut to_untrusted);
        assert!(!to_untrusted.headers.contains(ASSERTED));
        assert!(!to_untrusted.headers.contains(PRIVACY));
    }
}
