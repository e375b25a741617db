from ranking_service.server import main

main()
