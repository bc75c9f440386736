//! Black-box tests of Folio through real sockets: servers on port 0 (in-process or the real
//! binary), real HTTP clients, real stores on disk.

mod harness;
mod kube_api;
mod proxy;

mod api_content;
mod auth;
mod backup;
mod bad_input;
mod binary;
mod browser;
mod bully;
mod clock;
mod cluster;
mod cluster_auth;
mod compose;
mod config;
mod faults;
mod histories;
mod in_process;
mod kubernetes;
mod leadership;
mod messages;
mod openapi;
mod ops;
mod storage;
mod tls;
mod upgrade;
