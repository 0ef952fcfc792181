//! The widget's files, compiled into the binary. `widget.js` is the one URL a site embeds,
//! cached briefly and revalidated by its ETag; the files it loads carry their content hash
//! in their names and are cached for good.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::web::AppState;

const WIDGET_JS: &str = include_str!("../assets/widget.js");
const WIDGET_CSS: &str = include_str!("../assets/widget.css");
const DEMO_HTML: &str = include_str!("../assets/demo.html");

/// Where `widget.js` finds its stylesheet, relative to itself; replaced at first use.
const CSS_PLACEHOLDER: &str = "__SWITCHBOARD_WIDGET_CSS__";

/// One served file.
struct Asset {
    body: String,
    hash: String,
}

fn hash(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..6])
}

static CSS: LazyLock<Asset> = LazyLock::new(|| Asset {
    body: WIDGET_CSS.to_owned(),
    hash: hash(WIDGET_CSS),
});

static JS: LazyLock<Asset> = LazyLock::new(|| {
    let body = WIDGET_JS.replace(CSS_PLACEHOLDER, &format!("assets/widget.{}.css", CSS.hash));
    Asset {
        hash: hash(&body),
        body,
    }
});

/// The hashed file name of the widget script, as the demo page and sites may link it.
pub fn hashed_js_name() -> String {
    format!("widget.{}.js", JS.hash)
}

fn serve(
    asset: &Asset,
    content_type: &'static str,
    cache: &'static str,
    headers: &HeaderMap,
) -> Response {
    let etag = format!("\"{}\"", asset.hash);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.clone().into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A site on another origin loads these with a plain script/link tag; the fonts-and-
    // fetch rules of CORS do not apply, but allowing it costs nothing and helps preloading.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    response
}

const SHORT_CACHE: &str = "public, max-age=300, must-revalidate";
const FOREVER: &str = "public, max-age=31536000, immutable";

/// `GET /widget.js`.
pub async fn widget_js(headers: HeaderMap) -> Response {
    serve(&JS, "text/javascript; charset=utf-8", SHORT_CACHE, &headers)
}

/// `GET /assets/{file}`: `widget.{hash}.js` and `widget.{hash}.css`.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == format!("widget.{}.css", CSS.hash) {
        serve(&CSS, "text/css; charset=utf-8", FOREVER, &headers)
    } else if file == hashed_js_name() {
        serve(&JS, "text/javascript; charset=utf-8", FOREVER, &headers)
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// `GET /`: a demo page embedding the widget the way a site would.
pub async fn demo_page(State(state): State<AppState>) -> Response {
    let id = &state.shared.settings.id;
    let page = DEMO_HTML.replace("__CONNECTOR_ID__", id);
    let mut response = page.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_its_hashed_stylesheet_and_hashes_differ_with_content() {
        assert!(JS.body.contains(&format!("assets/widget.{}.css", CSS.hash)));
        assert!(!JS.body.contains(CSS_PLACEHOLDER));
        assert_eq!(JS.hash.len(), 12);
        assert_ne!(hash("a"), hash("b"));
    }

    #[test]
    fn the_demo_page_embeds_the_widget_with_one_script_tag() {
        assert_eq!(DEMO_HTML.matches("<script").count(), 1);
        assert!(DEMO_HTML.contains("/webchat/__CONNECTOR_ID__/widget.js"));
    }
}
