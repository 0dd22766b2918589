"""The KEDA ExternalScaler face of helios-scaler: metadata parsing and the gRPC servicer."""
