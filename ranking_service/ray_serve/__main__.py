from ranking_service.ray_serve.frontend import main

main()
