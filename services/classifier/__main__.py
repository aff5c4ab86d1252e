"""python -m services.classifier --artifact DIR [--host H] [--port P] | serve"""

from services.common.serve import service_main

if __name__ == "__main__":
    service_main(
        None,
        description="Serve a classifier artifact",
        env_prefix="CLASSIFIER",
        app_module="services.classifier.app",
        settings_class="services.classifier.config.ClassifierSettings",
    )
