//! Integration tests of the broker over real TCP sockets: rumqttc 3.1.1 and 5.0 clients for
//! the normal flows, raw sockets (packets built with the codec) for what rumqttc will not
//! send. Every wait is bounded so a broken broker fails tests instead of hanging them.

mod common;
mod lane;
mod raw;
mod retained;
mod sessions;
mod v311;
mod v5;
mod v5_features;
