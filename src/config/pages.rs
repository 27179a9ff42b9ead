//! Validation of error pages (`gateway.error_pages` and `gateway.intercept_errors`, the
//! defaults of every route, and `gateway.routes[i].error_pages` / `.intercept_errors`): each
//! file is read here, at load and on every reload, and refused when missing, over
//! [`MAX_PAGE_BYTES`] or of an unknown type.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{key_error, KeyError};

/// Largest error page accepted (1 MiB).
pub(crate) const MAX_PAGE_BYTES: u64 = 1 << 20;

/// One page: its bytes and the `Content-Type` its extension names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorPage {
    pub(crate) body: Bytes,
    pub(crate) content_type: &'static str,
    /// The file as configured (for `/status`).
    pub(crate) file: String,
}

/// A route's error pages by status, and whether the origin's own responses of those statuses
/// are replaced too (`intercept_errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorPages {
    pages: Vec<(u16, Arc<ErrorPage>)>,
    pub(crate) intercept: bool,
}

impl ErrorPages {
    /// The page for `status`, if one is configured.
    #[inline]
    pub(crate) fn get(&self, status: u16) -> Option<&Arc<ErrorPage>> {
        self.pages
            .iter()
            .find(|(code, _)| *code == status)
            .map(|(_, page)| page)
    }

    /// The statuses and files, for `/status`.
    pub(crate) fn files(&self) -> impl Iterator<Item = (u16, &str)> {
        self.pages
            .iter()
            .map(|(code, page)| (*code, page.file.as_str()))
    }
}

/// The `Content-Type` of a page file, from its extension.
fn content_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "xml" => "application/xml",
        "css" => "text/css",
        _ => return None,
    })
}

/// A route's pages: `own` (the route's `error_pages`, replacing the default as a whole) else
/// `default` (already validated), with `intercept` (the route's, else the default's).
/// `None` when there is no page: such a route pays one `Option` check.
pub(super) fn route_pages(
    own: Option<&BTreeMap<u16, PathBuf>>,
    intercept: Option<bool>,
    key: &str,
    base: &Path,
    default: &Option<Arc<ErrorPages>>,
    default_intercept: bool,
) -> Result<Option<Arc<ErrorPages>>, KeyError> {
    let intercept = intercept.unwrap_or(default_intercept);
    let pages = match own {
        Some(files) => validate_pages(files, intercept, &format!("{key}.error_pages"), base)?,
        None => match default {
            Some(d) if d.intercept == intercept => Some(d.clone()),
            Some(d) => Some(Arc::new(ErrorPages {
                pages: d.pages.clone(),
                intercept,
            })),
            None => None,
        },
    };
    if pages.is_none() && intercept {
        return Err(key_error(
            format!("{key}.intercept_errors"),
            "needs `error_pages` (the route's or gateway.error_pages)".into(),
        ));
    }
    Ok(pages)
}

/// One `error_pages` map (`key` names it in errors); `None` when empty.
pub(super) fn validate_pages(
    files: &BTreeMap<u16, PathBuf>,
    intercept: bool,
    key: &str,
    base: &Path,
) -> Result<Option<Arc<ErrorPages>>, KeyError> {
    let mut pages: Vec<(u16, Arc<ErrorPage>)> = Vec::with_capacity(files.len());
    for (&code, file) in files {
        let key = format!("{key}.{code}");
        if !(400..=599).contains(&code) {
            return Err(key_error(
                key,
                format!("{code} is not an error status (400..=599)"),
            ));
        }
        let path = base.join(file);
        let Some(content_type) = content_type(&path) else {
            return Err(key_error(
                key,
                format!(
                    "{}: unknown extension (html, htm, json, txt, svg, xml, css)",
                    path.display()
                ),
            ));
        };
        // A page already read for another status is shared, not read twice.
        if let Some((_, page)) = pages
            .iter()
            .find(|(_, p)| p.file == file.display().to_string())
        {
            let page = page.clone();
            pages.push((code, page));
            continue;
        }
        let size = std::fs::metadata(&path)
            .map_err(|e| key_error(key.clone(), format!("cannot read {}: {e}", path.display())))?
            .len();
        let over = |size: u64| {
            key_error(
                key.clone(),
                format!(
                    "{} is {size} bytes, over the {MAX_PAGE_BYTES}-byte limit",
                    path.display()
                ),
            )
        };
        if size > MAX_PAGE_BYTES {
            return Err(over(size));
        }
        let body = std::fs::read(&path)
            .map_err(|e| key_error(key.clone(), format!("cannot read {}: {e}", path.display())))?;
        // The file may have grown since its size was read.
        if body.len() as u64 > MAX_PAGE_BYTES {
            return Err(over(body.len() as u64));
        }
        pages.push((
            code,
            Arc::new(ErrorPage {
                body: Bytes::from(body),
                content_type,
                file: file.display().to_string(),
            }),
        ));
    }
    if pages.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(ErrorPages { pages, intercept })))
}
