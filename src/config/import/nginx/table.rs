//! The directives with a fixed verdict wherever they appear (process settings, tuning the
//! gateway does itself, file serving, OpenResty code) and the report entry of any directive
//! no other part of the walk reads.

use super::report::{Report, Verdict};
use super::syntax::Directive;

/// Directives with a fixed verdict wherever they appear.
pub(super) fn fixed(name: &str) -> Option<(Verdict, bool, &'static str)> {
    use Verdict::*;
    Some(match name {
        "user" | "worker_processes" | "pid" | "daemon" | "master_process" | "pcre_jit" | "env"
        | "thread_pool" | "lock_file" | "worker_cpu_affinity" | "worker_priority" => {
            (NotTranslated, false, "a process setting: Pingora's top-level keys (threads, pid_file, …) say this")
        }
        "load_module" => (DoneByGateway, false, "modules: the gateway's features are built in"),
        "worker_rlimit_nofile" => (DoneByGateway, false, "the gateway raises its open-files limit itself"),
        "events" => (DoneByGateway, false, "connection handling is Pingora's own"),
        "error_log" => (NotTranslated, false, "the gateway logs to standard error (RUST_LOG sets the level)"),
        "access_log" | "log_format" => (NotTranslated, false, "the gateway writes JSON access-log lines: set gateway.access_log.path"),
        "include" => (Translated, false, "read in place"),
        "types" | "default_type" | "charset" | "index" | "autoindex" | "try_files" | "alias" | "expires"
        | "open_file_cache" | "open_file_cache_valid" | "etag" => (NotTranslated, false, "the gateway serves no files"),
        "sendfile" | "tcp_nopush" | "tcp_nodelay" | "reset_timedout_connection" | "server_tokens"
        | "server_names_hash_bucket_size" | "server_names_hash_max_size" | "types_hash_max_size"
        | "types_hash_bucket_size" | "variables_hash_max_size" | "variables_hash_bucket_size"
        | "map_hash_bucket_size" | "map_hash_max_size" | "proxy_headers_hash_max_size"
        | "proxy_headers_hash_bucket_size" => (DoneByGateway, false, "tuning the gateway does itself"),
        "proxy_http_version" => (DoneByGateway, false, "the gateway speaks HTTP/1.1 to upstreams (with keep-alive)"),
        "proxy_buffering" | "proxy_buffers" | "proxy_buffer_size" | "proxy_busy_buffers_size"
        | "proxy_request_buffering" | "proxy_max_temp_file_size" | "client_body_buffer_size" => {
            (DoneByGateway, false, "the gateway streams bodies without buffering them")
        }
        "proxy_redirect" => (NotTranslated, false, "the gateway does not rewrite Location headers"),
        "ssl_session_cache" | "ssl_session_timeout" | "ssl_session_tickets" | "ssl_ciphers"
        | "ssl_prefer_server_ciphers" | "ssl_ecdh_curve" | "ssl_dhparam" | "ssl_conf_command"
        | "ssl_stapling" | "ssl_stapling_verify" | "ssl_trusted_certificate" => {
            (DoneByGateway, false, "rustls' session resumption and safe cipher suites, not configurable")
        }
        "http2" => (Translated, false, "listen[].http2"),
        "keepalive_requests" | "large_client_header_buffers" | "client_header_buffer_size" => {
            (NotTranslated, false, "the gateway's limits.max_header_bytes / max_headers cover head sizes (see docs/security.md)")
        }
        "real_ip_header" | "real_ip_recursive" => (DoneByGateway, false, "the gateway reads X-Forwarded-For from gateway.trusted_proxies"),
        "add_header" | "proxy_hide_header" | "proxy_pass_header" | "more_set_headers" => {
            (NotTranslated, false, "the gateway adds no configured response headers (hsts on TLS listeners only)")
        }
        "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_next_upstream_timeout" => {
            (Approximated, false, "the gateway tries the next server when a connection fails, not on error statuses")
        }
        "proxy_ssl_server_name" | "proxy_ssl_name" | "proxy_ssl_verify" | "proxy_ssl_trusted_certificate" => {
            (NotTranslated, false, "set the group's tls (sni, verify, ca) by hand")
        }
        "proxy_ignore_client_abort" | "client_body_temp_path" | "proxy_temp_path" => (DoneByGateway, false, "the gateway streams bodies and ends the upstream request with the client's"),
        "proxy_cache" | "proxy_cache_path" | "proxy_cache_valid" | "proxy_cache_key" | "proxy_cache_bypass"
        | "proxy_no_cache" | "proxy_cache_use_stale" | "proxy_cache_lock" => (NotTranslated, false, "the gateway has no cache"),
        "lua_package_path" | "lua_package_cpath" | "lua_shared_dict" | "lua_code_cache" | "init_by_lua_block"
        | "init_by_lua" | "init_by_lua_file" | "init_worker_by_lua_block" | "init_worker_by_lua"
        | "init_worker_by_lua_file" | "header_filter_by_lua_block" | "header_filter_by_lua"
        | "header_filter_by_lua_file" | "body_filter_by_lua_block" | "body_filter_by_lua"
        | "body_filter_by_lua_file" | "log_by_lua_block" | "log_by_lua" | "log_by_lua_file" => {
            (NotTranslated, false, "OpenResty code: no counterpart (the gateway runs no scripts)")
        }
        _ => return None,
    })
}

/// Whether `d` is OpenResty code that may decide where a request goes.
pub(super) fn routing_lua(d: &Directive) -> bool {
    [
        "access_by_lua",
        "rewrite_by_lua",
        "balancer_by_lua",
        "content_by_lua",
        "set_by_lua",
    ]
    .iter()
    .any(|p| d.name.starts_with(p))
}

pub(super) fn lua_entry(d: &Directive, report: &mut Report) {
    let code = d.raw.clone().unwrap_or_else(|| d.args.join(" "));
    let redis = code.contains("redis");
    let why = if redis {
        "OpenResty code looking the user up in Redis to pick an upstream: the gateway does this with a `users_store` rule and gateway.store (docs/redis-store.md)"
    } else {
        "OpenResty code: no counterpart (the gateway runs no scripts); write the decision as rules"
    };
    report.add(d, Verdict::NotTranslated, true, why);
}

/// A directive no other part reads.
pub(super) fn other(d: &Directive, report: &mut Report) {
    if let Some((verdict, routing, why)) = fixed(&d.name) {
        report.add(d, verdict, routing, why);
    } else if routing_lua(d) {
        lua_entry(d, report);
    } else {
        let routing = matches!(
            d.name.as_str(),
            "return"
                | "rewrite"
                | "if"
                | "location"
                | "proxy_pass"
                | "grpc_pass"
                | "fastcgi_pass"
                | "uwsgi_pass"
        );
        report.add(
            d,
            Verdict::NotTranslated,
            routing,
            "no counterpart in the gateway",
        );
    }
}
