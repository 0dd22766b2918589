"""What faces the network: the KEDA ExternalScaler servicer, the gRPC and HTTP servers, and the
one table that turns errors into gRPC status codes."""
