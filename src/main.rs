//! The `canary-gateway` binary: parse Pingora's command line (`-c -t -u -d`), load and validate
//! the configuration, wire the services and run. With no `-c`, run the bundled demo;
//! `canary-gateway import nginx FILE` translates an nginx configuration instead (docs/migrating-from-nginx.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use canary_gateway::config::{self, LoadedConfig};
use canary_gateway::ConfigSource;
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;

/// mimalloc: fewer cycles per request than glibc malloc under Pingora's allocation pattern
/// (measured in docs/performance.md), through its fastest entry points (`alloc`).
#[global_allocator]
static ALLOCATOR: canary_gateway::alloc::Allocator = canary_gateway::alloc::Allocator;

fn main() -> ExitCode {
    // `canary-gateway import nginx FILE …`: a subcommand beside Pingora's options.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("import") {
        return ExitCode::from(canary_gateway::import_command(&args[2..]));
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut opt = Opt::parse_args();
    // We read the file ourselves (Pingora's keys and the gateway's section live in one file),
    // so Pingora gets the parsed ServerConf and no path.
    let conf_path = opt.conf.take();
    // The demo keeps its admin changes in a state file of the user's (not under -t).
    let demo_state = match &conf_path {
        None if !opt.test => demo_state_file(),
        _ => None,
    };
    let loaded = match (&conf_path, &demo_state) {
        (Some(path), _) => config::load_file(Path::new(path)),
        (None, Some(state_file)) => config::load_demo_keeping(state_file),
        (None, None) => config::load_demo(),
    };
    let LoadedConfig {
        server,
        spec,
        gateway,
    } = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("canary-gateway: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = conf_path.as_deref().unwrap_or(config::DEMO_CONFIG_NAME);
    for warning in canary_gateway::config::certificate_warnings(
        &gateway.listen,
        canary_gateway::config::unix_now(),
    ) {
        log::warn!("{warning}");
        if opt.test {
            println!("canary-gateway: warning: {warning}");
        }
    }
    if opt.test {
        let checked = match &conf_path {
            Some(path) => {
                canary_gateway::check_api_objects(&ConfigSource::File(path.into()), &spec, &gateway)
            }
            None => Ok(0),
        };
        match checked {
            Ok(0) => {}
            Ok(n) => println!(
                "canary-gateway: {n} route(s) and group(s) made through the admin API fit it"
            ),
            Err(e) => {
                eprintln!("canary-gateway: invalid configuration: {e}");
                return ExitCode::FAILURE;
            }
        }
        println!("canary-gateway: configuration {source} is valid");
        return ExitCode::SUCCESS;
    }

    match canary_gateway::raise_open_files_limit() {
        Ok(files) => log::info!(
            "open files: {} descriptors (soft limit {} at start, hard limit {})",
            files.limit,
            files.before,
            files
                .hard
                .map_or("unlimited".to_string(), |h| h.to_string())
        ),
        Err(e) => log::warn!("open files: cannot raise the soft limit to the hard one: {e}"),
    }
    let listen = gateway.listen.clone();
    let config_source = match (&conf_path, &demo_state) {
        (Some(path), _) => ConfigSource::File(path.into()),
        (None, Some(state_file)) => ConfigSource::DemoKept(state_file.clone()),
        (None, None) => ConfigSource::Demo,
    };
    let mut pingora = Server::new_with_opt_and_conf(opt, server);
    pingora.bootstrap();
    if let Err(e) = canary_gateway::add_services(&mut pingora, config_source, spec, gateway) {
        eprintln!("canary-gateway: cannot start: {e}");
        return ExitCode::FAILURE;
    }
    log::info!(
        "canary-gateway serving {} from {source}",
        canary_gateway::config::describe_listeners(&listen)
    );
    if conf_path.is_none() {
        print_demo_help(&listen[0].addr, demo_state.as_deref());
    }
    pingora.run_forever();
}

/// The demo's state file, its folder made; `None` (changes not kept, said on the terminal)
/// when the folder cannot be made.
fn demo_state_file() -> Option<PathBuf> {
    let user = std::env::var("USER").unwrap_or_else(|_| "demo".into());
    let file = config::demo_state_file(
        std::env::var_os("XDG_STATE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
        &std::env::temp_dir(),
        &user,
    );
    let folder = file.parent()?;
    match std::fs::create_dir_all(folder) {
        Ok(()) => Some(file),
        Err(e) => {
            eprintln!(
                "canary-gateway: cannot make {} ({e}): the demo's changes will not be kept",
                folder.display()
            );
            None
        }
    }
}

fn print_demo_help(listen: &str, state_file: Option<&Path>) {
    println!(
        "\ncanary-gateway demo on http://{listen} (origins: version 1 = stable, version 2 = canary)\n\
         Try:\n\
         \x20 curl -i http://{listen}/                                       # no cookie: version 1\n\
         \x20 curl -i --cookie canary_user=alice http://{listen}/            # VIP: version 1\n\
         \x20 curl -i --cookie canary_user=user-6 http://{listen}/           # in the 10% rollout: version 2\n\
         \x20 curl -i --cookie canary_user=user-7 http://{listen}/           # not in the 10%: version 1\n\
         \x20 curl -i -H 'x-canary-group: canary' http://{listen}/           # QA override: version 2\n\n\
         The web page: http://127.0.0.1:9090/ui/ (token demo-operator-token, or demo-viewer-token to\n\
         look without changing anything).\n"
    );
    match state_file {
        Some(path) => println!(
            "Changes made on the page or through the admin API are kept in {}\n\
             (and its audit trail): delete the file to start the demo afresh.\n",
            path.display()
        ),
        None => println!("Changes made on the page are NOT kept: a restart undoes them.\n"),
    }
}
