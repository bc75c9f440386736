//! The admin web page at `/admin`: one HTML page, a script and a style sheet embedded in the
//! binary (no CDN, no build step). The page talks to the same JSON API as any client, with the
//! session cookie, and shows only what the logged-in user's role allows. A strict Content Security
//! Policy allows nothing but these files and the API.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .body(body)
}

/// `/admin`: the page.
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `/admin/`: the page lives at `/admin` so relative URLs resolve against the context path.
pub async fn redirect(req: HttpRequest) -> HttpResponse {
    let path = req.path().trim_end_matches('/').to_string();
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, path))
        .finish()
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}
