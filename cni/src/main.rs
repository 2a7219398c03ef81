//! `weft-cni`: as a CNI plugin, the runtime sets `CNI_COMMAND`; `weft-cni install`
//! installs it on a node (see `install`); `weft-cni pause` waits, doing nothing (the
//! main container of `weftctl uninstall`'s node cleanup).

use std::io::{Read as _, Write as _};

use cni::{conf, install, plugin};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("pause") {
        // The main container of Weft's node cleanup: its work is done by then.
        println!("this node is clean of Weft");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if args.first().map(String::as_str) == Some("install") {
        match install::Options::from_args(&args[1..])
            .and_then(|o| install::run(&o, |line| println!("{line}")))
        {
            Ok(()) => return,
            Err(e) => {
                eprintln!("weft-cni install: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = conf::version_of(&stdin);
    let outcome = match read {
        Err(e) => Err(conf::Error::new(
            conf::code::DECODE,
            "reading the network configuration from stdin failed",
            e.to_string(),
        )),
        Ok(_) => {
            conf::Env::read(|k| std::env::var(k).ok()).and_then(|env| plugin::run(&env, &stdin))
        }
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(result)) => {
            let _ = writeln!(out, "{result}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            eprintln!("weft-cni: {e}");
            std::process::exit(1);
        }
    }
}
