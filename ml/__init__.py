"""Machine learning for the console: synthetic CRM data, features, training, metrics, registry, drift, Azure ML."""
