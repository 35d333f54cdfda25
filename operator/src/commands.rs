//! One-shot subcommands that do their work and exit.

use std::io::{self, Write};

use anyhow::Context;

/// Writes `text` to standard output. A reader that goes away early is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to standard output"),
    }
}

/// Writes all CRDs to `out`. A reader that goes away early (`operator crds | head`) is not an
/// error.
pub fn print_crds(out: &mut impl Write) -> anyhow::Result<()> {
    let stream = tandem_api::crd::yaml_stream().context("rendering CRDs")?;
    match out.write_all(stream.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing CRDs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_api_crate_stream() {
        let mut out = Vec::new();
        print_crds(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            tandem_api::crd::yaml_stream().unwrap()
        );
    }

    #[test]
    fn closed_pipe_is_not_an_error() {
        struct ClosedPipe;
        impl Write for ClosedPipe {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(print_crds(&mut ClosedPipe).is_ok());
    }
}
