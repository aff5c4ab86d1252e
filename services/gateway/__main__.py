"""python -m services.gateway [--host H] [--port P]; upstreams from CLASSIFIER_URL and
GENERATOR_URL."""

from services.common.serve import service_main

if __name__ == "__main__":
    service_main(
        None,
        description="The Parlance gateway",
        env_prefix="GATEWAY",
        app_module="services.gateway.app",
        settings_class="services.gateway.config.GatewaySettings",
        artifact=False,
    )
