//! SDES-SRTP on the relay's legs: which crypto lines a party is offered or answered, and the
//! per-leg contexts that unprotect what the party sends and protect what it is sent. Pure:
//! the session table keeps one [`LegCrypto`] per secure leg (plain legs have none, so the
//! plain packet path does no SRTP work at all).

use tandem_srtp::sdes::{Crypto, SdesError};
use tandem_srtp::{Context, Error, Suite};

/// Which suites SDES may use (`SDES-off`, `SDES-no-<suite>`, `SDES-only-<suite>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdesPolicy {
    /// Offer no SDES keys (`off`).
    pub off: bool,
    /// Suites never used (`no-<suite>`).
    pub no: Vec<Suite>,
    /// When not empty, the only suites used (`only-<suite>`).
    pub only: Vec<Suite>,
}

impl SdesPolicy {
    /// Whether `suite` may be used.
    pub fn allows(&self, suite: Suite) -> bool {
        !self.off
            && !self.no.contains(&suite)
            && (self.only.is_empty() || self.only.contains(&suite))
    }

    /// Reads one `SDES` option; `false` when it is not one this relay acts on.
    pub fn apply(&mut self, option: &str) -> bool {
        let lower = option.to_ascii_lowercase();
        if lower == "off" {
            self.off = true;
            return true;
        }
        let (list, name) = if let Some(name) = lower.strip_prefix("no-") {
            (&mut self.no, name)
        } else if let Some(name) = lower.strip_prefix("only-") {
            (&mut self.only, name)
        } else {
            return false;
        };
        match Suite::from_name(name) {
            Some(suite) => {
                list.push(suite);
                true
            }
            // Suites this relay never offers need no excluding.
            None => lower.starts_with("no-"),
        }
    }
}

/// Whether an SDP transport protocol is SDES-keyed SRTP.
pub fn is_srtp(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("RTP/SAVP") || protocol.eq_ignore_ascii_case("RTP/SAVPF")
}

/// The usable `a=crypto` lines of a media section, in the sender's order, and a warning for
/// each line that is not.
pub fn crypto_lines<'a>(
    values: impl Iterator<Item = &'a str>,
    policy: &SdesPolicy,
    warnings: &mut Vec<String>,
) -> Vec<Crypto> {
    values
        .filter_map(|value| match Crypto::parse(value) {
            Ok(c) if policy.allows(c.key.suite()) => Some(c),
            // Suites the relay lacks are common in offers and simply not taken.
            Ok(_) | Err(SdesError::UnsupportedSuite(_)) => None,
            Err(e) => {
                warnings.push(format!("crypto line '{}' ({e})", first_words(value)));
                None
            }
        })
        .collect()
}

/// The tag and suite of a crypto line, never its key.
fn first_words(value: &str) -> String {
    value
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One party's SRTP on one media section.
#[derive(Clone, Debug, Default)]
pub struct LegCrypto {
    /// The party's own key (what it sends with) and the context that unprotects its packets.
    inbound: Option<(Crypto, Context)>,
    /// The crypto lines the relay gave the party: every suite in an offer, the one chosen in
    /// an answer.
    ours: Vec<Crypto>,
    /// The line of `ours` the party took and the context that protects what it is sent.
    outbound: Option<(Crypto, Context)>,
}

impl LegCrypto {
    /// The party offered SRTP with `offered` (usable lines, its order): the relay takes the
    /// first, and answers it with a key of its own under the same tag and suite. `None`
    /// when no line is usable.
    pub fn take_offer(&mut self, offered: &[Crypto]) -> Option<()> {
        let theirs = offered.first()?;
        self.set_inbound(theirs);
        let reuse = self
            .ours
            .first()
            .filter(|o| {
                self.ours.len() == 1 && o.tag == theirs.tag && o.key.suite() == theirs.key.suite()
            })
            .cloned();
        let ours = match reuse {
            Some(ours) => ours,
            None => Crypto::generate(theirs.tag, theirs.key.suite()).ok()?,
        };
        self.ours = vec![ours];
        self.accept(theirs.tag);
        Some(())
    }

    /// The relay offers the party SRTP: one line per allowed suite, each keeping the key it
    /// had in an earlier offer (so a re-offer leaves media flowing). `None` when no suite is
    /// allowed.
    pub fn make_offer(&mut self, policy: &SdesPolicy) -> Option<&[Crypto]> {
        let mut next_tag = self.ours.iter().map(|o| o.tag).max().unwrap_or(0) + 1;
        let mut ours = Vec::new();
        for suite in Suite::ALL.into_iter().filter(|s| policy.allows(*s)) {
            match self.ours.iter().find(|o| o.key.suite() == suite) {
                Some(kept) => ours.push(kept.clone()),
                None => {
                    ours.push(Crypto::generate(next_tag, suite).ok()?);
                    next_tag += 1;
                }
            }
        }
        if ours.is_empty() {
            return None;
        }
        self.ours = ours;
        Some(&self.ours)
    }

    /// The party answered the relay's offer with `answered` (its chosen line, under one of
    /// the relay's tags, with its own key). Returns why it cannot be used.
    pub fn take_answer(&mut self, answered: &[Crypto]) -> Result<(), String> {
        let theirs = answered
            .iter()
            .find(|a| {
                self.ours
                    .iter()
                    .any(|o| o.tag == a.tag && o.key.suite() == a.key.suite())
            })
            .ok_or("the answer's crypto line matches none offered")?;
        self.set_inbound(theirs);
        self.accept(theirs.tag);
        self.ours.retain(|o| o.tag == theirs.tag);
        Ok(())
    }

    /// The lines to put in the SDP sent to the party.
    pub fn ours(&self) -> &[Crypto] {
        &self.ours
    }

    /// Whether the party took one of the relay's keys, so packets can be sent to it.
    pub fn can_send(&self) -> bool {
        self.outbound.is_some()
    }

    /// Whether packets both ways are keyed.
    pub fn established(&self) -> bool {
        self.inbound.is_some() && self.outbound.is_some()
    }

    fn set_inbound(&mut self, theirs: &Crypto) {
        if self.inbound.as_ref().is_none_or(|(c, _)| c != theirs) {
            self.inbound = Some((theirs.clone(), Context::new(&theirs.key)));
        }
    }

    fn accept(&mut self, tag: u32) {
        let Some(ours) = self.ours.iter().find(|o| o.tag == tag) else {
            return;
        };
        if self.outbound.as_ref().is_none_or(|(c, _)| c != ours) {
            self.outbound = Some((ours.clone(), Context::new(&ours.key)));
        }
    }

    /// Unprotects an SRTP or SRTCP packet from the party in place; returns its new length.
    /// Without the party's key yet, the packet is not one the relay can check.
    pub fn unprotect(&mut self, buf: &mut [u8], len: usize, rtcp: bool) -> Result<usize, Error> {
        let (_, context) = self.inbound.as_mut().ok_or(Error::Auth)?;
        if rtcp {
            context.unprotect_rtcp(buf, len)
        } else {
            context.unprotect_rtp(buf, len)
        }
    }

    /// Protects an RTP or RTCP packet sent to the party in place; returns its new length.
    /// Before the party took a key nothing can be sent to it.
    pub fn protect(&mut self, buf: &mut [u8], len: usize, rtcp: bool) -> Result<usize, Error> {
        let (_, context) = self.outbound.as_mut().ok_or(Error::Malformed)?;
        if rtcp {
            context.protect_rtcp(buf, len)
        } else {
            context.protect_rtp(buf, len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reads_rtpengine_sdes_options() {
        let mut p = SdesPolicy::default();
        assert!(p.apply("no-AES_CM_128_HMAC_SHA1_32"));
        assert!(p.apply("no-F8_128_HMAC_SHA1_80"));
        assert!(!p.apply("pad"));
        assert!(!p.allows(Suite::AesCm128HmacSha1_32));
        assert!(p.allows(Suite::AesCm128HmacSha1_80));
        assert!(p.apply("only-AEAD_AES_128_GCM"));
        assert!(!p.allows(Suite::AesCm128HmacSha1_80));
        assert!(p.allows(Suite::AeadAes128Gcm));
        assert!(p.apply("off"));
        assert!(!p.allows(Suite::AeadAes128Gcm));
    }

    #[test]
    fn offer_and_answer_key_both_directions() {
        // The relay offers a party every suite and the party picks the 32-bit one.
        let mut leg = LegCrypto::default();
        let offered = leg.make_offer(&SdesPolicy::default()).unwrap().to_vec();
        assert_eq!(offered.len(), Suite::ALL.len());
        let ours = offered
            .iter()
            .find(|c| c.key.suite() == Suite::AesCm128HmacSha1_32)
            .unwrap()
            .clone();
        let theirs = Crypto::generate(ours.tag, Suite::AesCm128HmacSha1_32).unwrap();
        assert!(!leg.established());
        leg.take_answer(std::slice::from_ref(&theirs)).unwrap();
        assert!(leg.established());
        assert_eq!(leg.ours(), std::slice::from_ref(&ours));

        // What the relay protects for the party, the party (with the relay's key) reads.
        let mut party_rx = Context::new(&ours.key);
        let mut party_tx = Context::new(&theirs.key);
        let mut buf = vec![0u8; 256];
        buf[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
        let len = leg.protect(&mut buf, 52, false).unwrap();
        assert_eq!(party_rx.unprotect_rtp(&mut buf, len), Ok(52));
        let len = party_tx.protect_rtp(&mut buf, 52).unwrap();
        assert_eq!(leg.unprotect(&mut buf, len, false), Ok(52));

        // An answer under a tag never offered is refused.
        let mut other = LegCrypto::default();
        other.make_offer(&SdesPolicy::default());
        let stranger = Crypto::generate(99, Suite::AesCm128HmacSha1_80).unwrap();
        assert!(other.take_answer(&[stranger]).is_err());
    }

    #[test]
    fn repeated_offers_keep_keys_and_state() {
        let theirs = Crypto::generate(3, Suite::AeadAes128Gcm).unwrap();
        let mut leg = LegCrypto::default();
        leg.take_offer(std::slice::from_ref(&theirs)).unwrap();
        let first = leg.ours().to_vec();
        assert_eq!(first[0].tag, 3);
        assert_eq!(first[0].key.suite(), Suite::AeadAes128Gcm);
        leg.take_offer(std::slice::from_ref(&theirs)).unwrap();
        assert_eq!(leg.ours(), &first[..]);

        let mut offer = LegCrypto::default();
        let a = offer.make_offer(&SdesPolicy::default()).unwrap().to_vec();
        let b = offer.make_offer(&SdesPolicy::default()).unwrap().to_vec();
        assert_eq!(a, b);
        assert!(LegCrypto::default().take_offer(&[]).is_none());
    }
}
