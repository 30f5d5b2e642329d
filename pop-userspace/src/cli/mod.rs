//! popctl: argument parsing, the socket client call and table rendering.
