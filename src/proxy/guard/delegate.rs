//! The Pingora stream traits a guard wrapper passes through to the stream it wraps (all but
//! reading, writing and peeking, which the guards watch), and its `Debug`.

/// Implements Pingora's `Shutdown`, `UniqueID`, `Ssl` (unless `all_but_ssl`) and digest traits for a wrapper whose
/// `inner` field is the wrapped `Stream`, each by calling the same method on `inner`; and
/// `Debug` (which Pingora's streams need), showing `inner` and the wrapper's `$state` field.
macro_rules! delegate_io {
    ($wrapper:ident, $state:ident) => {
        delegate_io!($wrapper, $state, all_but_ssl);

        impl pingora_core::protocols::Ssl for $wrapper {
            fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
                self.inner.get_ssl()
            }

            fn get_ssl_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
                self.inner.get_ssl_digest()
            }

            fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
                self.inner.selected_alpn_proto()
            }
        }
    };
    // For a wrapper that answers `Ssl` itself (the h2c sniffer reports the protocol it saw).
    ($wrapper:ident, $state:ident, all_but_ssl) => {
        impl std::fmt::Debug for $wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($wrapper))
                    .field("inner", &self.inner)
                    .field(stringify!($state), &self.$state)
                    .finish()
            }
        }

        #[async_trait::async_trait]
        impl pingora_core::protocols::Shutdown for $wrapper {
            async fn shutdown(&mut self) {
                self.inner.shutdown().await
            }
        }

        impl pingora_core::protocols::UniqueID for $wrapper {
            fn id(&self) -> pingora_core::protocols::UniqueIDType {
                self.inner.id()
            }
        }

        impl pingora_core::protocols::GetTimingDigest for $wrapper {
            fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
                self.inner.get_timing_digest()
            }

            fn get_read_pending_time(&self) -> std::time::Duration {
                self.inner.get_read_pending_time()
            }

            fn get_write_pending_time(&self) -> std::time::Duration {
                self.inner.get_write_pending_time()
            }
        }

        impl pingora_core::protocols::GetProxyDigest for $wrapper {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
                self.inner.get_proxy_digest()
            }

            fn set_proxy_digest(
                &mut self,
                digest: pingora_core::protocols::raw_connect::ProxyDigest,
            ) {
                self.inner.set_proxy_digest(digest)
            }
        }

        impl pingora_core::protocols::GetSocketDigest for $wrapper {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
                self.inner.get_socket_digest()
            }

            fn set_socket_digest(&mut self, digest: pingora_core::protocols::SocketDigest) {
                self.inner.set_socket_digest(digest)
            }
        }
    };
}

pub(super) use delegate_io;
