"""python -m services.generator --artifact DIR [--host H] [--port P] | serve"""

from services.common.serve import service_main

if __name__ == "__main__":
    service_main(
        None,
        description="Serve a generator artifact",
        env_prefix="GENERATOR",
        app_module="services.generator.app",
        settings_class="services.generator.config.GeneratorSettings",
    )
