//! BULLY's route: `POST /cluster/v1/heartbeat`, registered only when this server runs
//! `cluster.mode=BULLY` (elsewhere it is no endpoint at all). It lives with the other handlers,
//! not in `cluster::bully`, so that the election knows no HTTP server types: the handler checks
//! the caller and hands the beat to [`Bully::heard`].

use actix_web::{HttpResponse, web};

use super::body::ServerJson;
use crate::auth::server::{ServerAuth, ServerGate};
use crate::cluster::bully::{Beat, BeatAnswer, Bully};
use crate::error::{ApiError, Code};

/// Registers BULLY's route (relative to the context path).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/cluster/v1/heartbeat", "POST").route(web::post().to(heartbeat)));
}

async fn heartbeat(
    bully: web::Data<Bully>,
    gate: web::Data<ServerGate>,
    auth: ServerAuth,
    body: ServerJson<Beat>,
) -> Result<HttpResponse, ApiError> {
    if body.0.from.id != auth.caller {
        return Err(ApiError::new(
            Code::InvalidBeat,
            "a heartbeat speaks for the server that sends it",
        ));
    }
    let beat = bully.heard(body.0, auth.version).await;
    Ok(HttpResponse::Ok().json(BeatAnswer {
        term: gate.terms.current(),
        beat,
    }))
}
