//! `crdgen [OUT_DIR]`: writes gateway.yaml, trunk.yaml and routeplan.yaml into OUT_DIR, or
//! prints all CRDs as one YAML stream when no directory is given.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let out_dir = args.next().map(PathBuf::from);
    if args.next().is_some() {
        eprintln!("usage: crdgen [OUT_DIR]");
        return ExitCode::from(2);
    }
    match run(out_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(out_dir: Option<PathBuf>) -> Result<(), String> {
    let Some(out_dir) = out_dir else {
        let stream = tandem_api::crd::yaml_stream().map_err(|e| e.to_string())?;
        print!("{stream}");
        return Ok(());
    };
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    for (file_name, crd) in tandem_api::crd::crds() {
        let yaml = tandem_api::crd::to_yaml(&crd).map_err(|e| e.to_string())?;
        let path = out_dir.join(file_name);
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
