"""Class names and zero-shot prompt templates of the catalog datasets.

Names and templates follow the CLIP paper's prompt file and the task-vectors code (the convention the
LDIFS paper evaluates with): 18 templates for CIFAR, one for MNIST and SVHN, three for EuroSAT with
its classes renamed for prompting ("lake or sea" for ``SeaLake``), and so on. Class names are listed
in label order, i.e. the order of the labels the dataset's loader yields.

A template is a plain string with exactly one ``{}``; it is filled with ``str.replace`` and never with
``str.format``, because class names may be user text. The checks shared by every editor of names and
templates (catalog overrides, upload manifests) live here too.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import unicodedata
from types import ModuleType



def _open_clip_zero_shot_metadata() -> ModuleType:
    """open_clip's ImageNet names and templates without importing open_clip.

    ``import open_clip.zero_shot_metadata`` runs ``open_clip/__init__`` first, which loads torch and
    torchvision; the metadata file itself is plain Python with no imports, so it is executed on its own.
    Keeps this module (and the catalog and spec validation that read it) light for the service layer.
    """
    loaded = sys.modules.get("open_clip.zero_shot_metadata")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("open_clip")  # finds the package without running its __init__
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed", name="open_clip")
    path = f"{list(package.submodule_search_locations)[0]}/zero_shot_metadata.py"
    spec = importlib.util.spec_from_file_location("ldifs_engine.data._open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_OPEN_CLIP_METADATA = _open_clip_zero_shot_metadata()
IMAGENET_CLASSNAMES = _OPEN_CLIP_METADATA.IMAGENET_CLASSNAMES
OPENAI_IMAGENET_TEMPLATES = _OPEN_CLIP_METADATA.OPENAI_IMAGENET_TEMPLATES

MAX_CLASSNAME_CHARS = 200
MAX_TEMPLATE_CHARS = 300
MAX_TEMPLATES = 100
PLACEHOLDER = "{}"
WORDNET_ID = re.compile(r"^n\d{8}$")


def _lines(block: str) -> tuple[str, ...]:
    """One class name per non-empty line of ``block`` (keeps long lists readable and diff-friendly)."""
    return tuple(line.strip() for line in block.strip().splitlines() if line.strip())


DEFAULT_TEMPLATES = ("a photo of a {}.",)

CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)
NUMBER_TEMPLATES = ('a photo of the number: "{}".',)
EUROSAT_TEMPLATES = (
    "a centered satellite photo of {}.",
    "a centered satellite photo of a {}.",
    "a centered satellite photo of the {}.",
)
DTD_TEMPLATES = (
    "a photo of a {} texture.",
    "a photo of a {} pattern.",
    "a photo of a {} thing.",
    "a photo of a {} object.",
    "a photo of the {} texture.",
    "a photo of the {} pattern.",
    "a photo of the {} thing.",
    "a photo of the {} object.",
)
GTSRB_TEMPLATES = (
    'a zoomed in photo of a "{}" traffic sign.',
    'a centered photo of a "{}" traffic sign.',
    'a close up photo of a "{}" traffic sign.',
)
STL10_TEMPLATES = ("a photo of a {}.", "a photo of the {}.")
SUN397_TEMPLATES = ("a photo of a {}.", "a photo of the {}.")
CARS_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of my {}.",
    "i love my {}!",
    "a photo of my dirty {}.",
    "a photo of my clean {}.",
    "a photo of my new {}.",
    "a photo of my old {}.",
)
RESISC45_TEMPLATES = tuple(
    f"{kind} {view} of {article}{{}}."
    for article in ("", "a ", "the ")
    for kind, view in (
        ("satellite", "imagery"), ("aerial", "imagery"), ("satellite", "photo"),
        ("aerial", "photo"), ("satellite", "view"), ("aerial", "view"),
    )
)
FOOD101_TEMPLATES = ("a photo of {}, a type of food.",)
FLOWERS102_TEMPLATES = ("a photo of a {}, a type of flower.",)
OXFORD_PETS_TEMPLATES = ("a photo of a {}, a type of pet.",)
FGVC_AIRCRAFT_TEMPLATES = ("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft.")
# open_clip ships CLIP's 80 ImageNet templates as lambdas; calling one with the placeholder recovers it.
IMAGENET_TEMPLATES = tuple(t(PLACEHOLDER) for t in OPENAI_IMAGENET_TEMPLATES)

DIGITS = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
# torchvision's EuroSAT folders sorted: AnnualCrop, Forest, HerbaceousVegetation, Highway, Industrial,
# Pasture, PermanentCrop, Residential, River, SeaLake.
EUROSAT_CLASSES = (
    "annual crop land",
    "forest",
    "brushland or shrubland",
    "highway or road",
    "industrial buildings or commercial buildings",
    "pasture land",
    "permanent crop land",
    "residential buildings or homes or apartments",
    "river",
    "lake or sea",
)

CIFAR100_CLASSES = _lines("""
apple
aquarium fish
baby
bear
beaver
bed
bee
beetle
bicycle
bottle
bowl
boy
bridge
bus
butterfly
camel
can
castle
caterpillar
cattle
chair
chimpanzee
clock
cloud
cockroach
couch
crab
crocodile
cup
dinosaur
dolphin
elephant
flatfish
forest
fox
girl
hamster
house
kangaroo
keyboard
lamp
lawn mower
leopard
lion
lizard
lobster
man
maple tree
motorcycle
mountain
mouse
mushroom
oak tree
orange
orchid
otter
palm tree
pear
pickup truck
pine tree
plain
plate
poppy
porcupine
possum
rabbit
raccoon
ray
road
rocket
rose
sea
seal
shark
shrew
skunk
skyscraper
snail
snake
spider
squirrel
streetcar
sunflower
sweet pepper
table
tank
telephone
television
tiger
tractor
train
trout
tulip
turtle
wardrobe
whale
willow tree
wolf
woman
worm
""")

DTD_CLASSES = _lines("""
banded
blotchy
braided
bubbly
bumpy
chequered
cobwebbed
cracked
crosshatched
crystalline
dotted
fibrous
flecked
freckled
frilly
gauzy
grid
grooved
honeycombed
interlaced
knitted
lacelike
lined
marbled
matted
meshed
paisley
perforated
pitted
pleated
polka-dotted
porous
potholed
scaly
smeared
spiralled
sprinkled
stained
stratified
striped
studded
swirly
veined
waffled
woven
wrinkled
zigzagged
""")

RESISC45_CLASSES = _lines("""
airplane
airport
baseball diamond
basketball court
beach
bridge
chaparral
church
circular farmland
cloud
commercial area
dense residential
desert
forest
freeway
golf course
ground track field
harbor
industrial area
intersection
island
lake
meadow
medium residential
mobile home park
mountain
overpass
palace
parking lot
railway
railway station
rectangular farmland
river
roundabout
runway
sea ice
ship
snowberg
sparse residential
stadium
storage tank
tennis court
terrace
thermal power station
wetland
""")

FOOD101_CLASSES = _lines("""
apple pie
baby back ribs
baklava
beef carpaccio
beef tartare
beet salad
beignets
bibimbap
bread pudding
breakfast burrito
bruschetta
caesar salad
cannoli
caprese salad
carrot cake
ceviche
cheese plate
cheesecake
chicken curry
chicken quesadilla
chicken wings
chocolate cake
chocolate mousse
churros
clam chowder
club sandwich
crab cakes
creme brulee
croque madame
cup cakes
deviled eggs
donuts
dumplings
edamame
eggs benedict
escargots
falafel
filet mignon
fish and chips
foie gras
french fries
french onion soup
french toast
fried calamari
fried rice
frozen yogurt
garlic bread
gnocchi
greek salad
grilled cheese sandwich
grilled salmon
guacamole
gyoza
hamburger
hot and sour soup
hot dog
huevos rancheros
hummus
ice cream
lasagna
lobster bisque
lobster roll sandwich
macaroni and cheese
macarons
miso soup
mussels
nachos
omelette
onion rings
oysters
pad thai
paella
pancakes
panna cotta
peking duck
pho
pizza
pork chop
poutine
prime rib
pulled pork sandwich
ramen
ravioli
red velvet cake
risotto
samosa
sashimi
scallops
seaweed salad
shrimp and grits
spaghetti bolognese
spaghetti carbonara
spring rolls
steak
strawberry shortcake
sushi
tacos
takoyaki
tiramisu
tuna tartare
waffles
""")

FGVC_AIRCRAFT_CLASSES = _lines("""
707-320
727-200
737-200
737-300
737-400
737-500
737-600
737-700
737-800
737-900
747-100
747-200
747-300
747-400
757-200
757-300
767-200
767-300
767-400
777-200
777-300
A300B4
A310
A318
A319
A320
A321
A330-200
A330-300
A340-200
A340-300
A340-500
A340-600
A380
ATR-42
ATR-72
An-12
BAE 146-200
BAE 146-300
BAE-125
Beechcraft 1900
Boeing 717
C-130
C-47
CRJ-200
CRJ-700
CRJ-900
Cessna 172
Cessna 208
Cessna 525
Cessna 560
Challenger 600
DC-10
DC-3
DC-6
DC-8
DC-9-30
DH-82
DHC-1
DHC-6
DHC-8-100
DHC-8-300
DR-400
Dornier 328
E-170
E-190
E-195
EMB-120
ERJ 135
ERJ 145
Embraer Legacy 600
Eurofighter Typhoon
F-16A/B
F/A-18
Falcon 2000
Falcon 900
Fokker 100
Fokker 50
Fokker 70
Global Express
Gulfstream IV
Gulfstream V
Hawk T1
Il-76
L-1011
MD-11
MD-80
MD-87
MD-90
Metroliner
Model B200
PA-28
SR-20
Saab 2000
Saab 340
Spitfire
Tornado
Tu-134
Tu-154
Yak-42
""")

FLOWERS102_CLASSES = _lines("""
pink primrose
hard-leaved pocket orchid
canterbury bells
sweet pea
english marigold
tiger lily
moon orchid
bird of paradise
monkshood
globe thistle
snapdragon
colt's foot
king protea
spear thistle
yellow iris
globe flower
purple coneflower
peruvian lily
balloon flower
giant white arum lily
fire lily
pincushion flower
fritillary
red ginger
grape hyacinth
corn poppy
prince of wales feathers
stemless gentian
artichoke
sweet william
carnation
garden phlox
love in the mist
mexican aster
alpine sea holly
ruby-lipped cattleya
cape flower
great masterwort
siam tulip
lenten rose
barbeton daisy
daffodil
sword lily
poinsettia
bolero deep blue
wallflower
marigold
buttercup
oxeye daisy
common dandelion
petunia
wild pansy
primula
sunflower
pelargonium
bishop of llandaff
gaura
geranium
orange dahlia
pink and yellow dahlia
cautleya spicata
japanese anemone
black-eyed susan
silverbush
californian poppy
osteospermum
spring crocus
bearded iris
windflower
tree poppy
gazania
azalea
water lily
rose
thorn apple
morning glory
passion flower
lotus
toad lily
anthurium
frangipani
clematis
hibiscus
columbine
desert-rose
tree mallow
magnolia
cyclamen
watercress
canna lily
hippeastrum
bee balm
air plant
foxglove
bougainvillea
camellia
mallow
mexican petunia
bromelia
blanket flower
trumpet creeper
blackberry lily
""")

GTSRB_CLASSES = _lines("""
red and white circle 20 kph speed limit
red and white circle 30 kph speed limit
red and white circle 50 kph speed limit
red and white circle 60 kph speed limit
red and white circle 70 kph speed limit
red and white circle 80 kph speed limit
end / de-restriction of 80 kph speed limit
red and white circle 100 kph speed limit
red and white circle 120 kph speed limit
red and white circle red car and black car no passing
red and white circle red truck and black car no passing
red and white triangle road intersection warning
white and yellow diamond priority road
red and white upside down triangle yield right-of-way
stop
empty red and white circle
red and white circle no truck entry
red circle with white horizonal stripe no entry
red and white triangle with exclamation mark warning
red and white triangle with black left curve approaching warning
red and white triangle with black right curve approaching warning
red and white triangle with black double curve approaching warning
red and white triangle rough / bumpy road warning
red and white triangle car skidding / slipping warning
red and white triangle with merging / narrow lanes warning
red and white triangle with person digging / construction / road work warning
red and white triangle with traffic light approaching warning
red and white triangle with person walking warning
red and white triangle with child and person walking warning
red and white triangle with bicyle warning
red and white triangle with snowflake / ice warning
red and white triangle with deer warning
white circle with gray strike bar no speed limit
blue circle with white right turn arrow mandatory
blue circle with white left turn arrow mandatory
blue circle with white forward arrow mandatory
blue circle with white forward or right turn arrow mandatory
blue circle with white forward or left turn arrow mandatory
blue circle with white keep right arrow mandatory
blue circle with white keep left arrow mandatory
blue circle with white arrows indicating a traffic circle
white circle with gray strike bar indicating no passing for cars has ended
white circle with gray strike bar indicating no passing for trucks has ended
""")

OXFORD_PETS_CLASSES = _lines("""
Abyssinian
American Bulldog
American Pit Bull Terrier
Basset Hound
Beagle
Bengal
Birman
Bombay
Boxer
British Shorthair
Chihuahua
Egyptian Mau
English Cocker Spaniel
English Setter
German Shorthaired
Great Pyrenees
Havanese
Japanese Chin
Keeshond
Leonberger
Maine Coon
Miniature Pinscher
Newfoundland
Persian
Pomeranian
Pug
Ragdoll
Russian Blue
Saint Bernard
Samoyed
Scottish Terrier
Shiba Inu
Siamese
Sphynx
Staffordshire Bull Terrier
Wheaten Terrier
Yorkshire Terrier
""")

SUN397_CLASSES = _lines("""
abbey
airplane cabin
airport terminal
alley
amphitheater
amusement arcade
amusement park
anechoic chamber
apartment building outdoor
apse indoor
aquarium
aqueduct
arch
archive
arrival gate outdoor
art gallery
art school
art studio
assembly line
athletic field outdoor
atrium public
attic
auditorium
auto factory
badlands
badminton court indoor
baggage claim
bakery shop
balcony exterior
balcony interior
ball pit
ballroom
bamboo forest
banquet hall
bar
barn
barndoor
baseball field
basement
basilica
basketball court outdoor
bathroom
batters box
bayou
bazaar indoor
bazaar outdoor
beach
beauty salon
bedroom
berth
biology laboratory
bistro indoor
boardwalk
boat deck
boathouse
bookstore
booth indoor
botanical garden
bow window indoor
bow window outdoor
bowling alley
boxing ring
brewery indoor
bridge
building facade
bullring
burial chamber
bus interior
butchers shop
butte
cabin outdoor
cafeteria
campsite
campus
canal natural
canal urban
candy store
canyon
car interior backseat
car interior frontseat
carrousel
casino indoor
castle
catacomb
cathedral indoor
cathedral outdoor
cavern indoor
cemetery
chalet
cheese factory
chemistry lab
chicken coop indoor
chicken coop outdoor
childs room
church indoor
church outdoor
classroom
clean room
cliff
cloister indoor
closet
clothing store
coast
cockpit
coffee shop
computer room
conference center
conference room
construction site
control room
control tower outdoor
corn field
corral
corridor
cottage garden
courthouse
courtroom
courtyard
covered bridge exterior
creek
crevasse
crosswalk
cubicle office
dam
delicatessen
dentists office
desert sand
desert vegetation
diner indoor
diner outdoor
dinette home
dinette vehicle
dining car
dining room
discotheque
dock
doorway outdoor
dorm room
driveway
driving range outdoor
drugstore
electrical substation
elevator door
elevator interior
elevator shaft
engine room
escalator indoor
excavation
factory indoor
fairway
fastfood restaurant
field cultivated
field wild
fire escape
fire station
firing range indoor
fishpond
florist shop indoor
food court
forest broadleaf
forest needleleaf
forest path
forest road
formal garden
fountain
galley
game room
garage indoor
garbage dump
gas station
gazebo exterior
general store indoor
general store outdoor
gift shop
golf course
greenhouse indoor
greenhouse outdoor
gymnasium indoor
hangar indoor
hangar outdoor
harbor
hayfield
heliport
herb garden
highway
hill
home office
hospital
hospital room
hot spring
hot tub outdoor
hotel outdoor
hotel room
house
hunting lodge outdoor
ice cream parlor
ice floe
ice shelf
ice skating rink indoor
ice skating rink outdoor
iceberg
igloo
industrial area
inn outdoor
islet
jacuzzi indoor
jail cell
jail indoor
jewelry shop
kasbah
kennel indoor
kennel outdoor
kindergarden classroom
kitchen
kitchenette
labyrinth outdoor
lake natural
landfill
landing deck
laundromat
lecture room
library indoor
library outdoor
lido deck outdoor
lift bridge
lighthouse
limousine interior
living room
lobby
lock chamber
locker room
mansion
manufactured home
market indoor
market outdoor
marsh
martial arts gym
mausoleum
medina
moat water
monastery outdoor
mosque indoor
mosque outdoor
motel
mountain
mountain snowy
movie theater indoor
museum indoor
music store
music studio
nuclear power plant outdoor
nursery
oast house
observatory outdoor
ocean
office
office building
oil refinery outdoor
oilrig
operating room
orchard
outhouse outdoor
pagoda
palace
pantry
park
parking garage indoor
parking garage outdoor
parking lot
parlor
pasture
patio
pavilion
pharmacy
phone booth
physics laboratory
picnic area
pilothouse indoor
planetarium outdoor
playground
playroom
plaza
podium indoor
podium outdoor
pond
poolroom establishment
poolroom home
power plant outdoor
promenade deck
pub indoor
pulpit
putting green
racecourse
raceway
raft
railroad track
rainforest
reception
recreation room
residential neighborhood
restaurant
restaurant kitchen
restaurant patio
rice paddy
riding arena
river
rock arch
rope bridge
ruin
runway
sandbar
sandbox
sauna
schoolhouse
sea cliff
server room
shed
shoe shop
shopfront
shopping mall indoor
shower
skatepark
ski lodge
ski resort
ski slope
sky
skyscraper
slum
snowfield
squash court
stable
stadium baseball
stadium football
stage indoor
staircase
street
subway interior
subway station platform
supermarket
sushi bar
swamp
swimming pool indoor
swimming pool outdoor
synagogue indoor
synagogue outdoor
television studio
temple east asia
temple south asia
tennis court indoor
tennis court outdoor
tent outdoor
theater indoor procenium
theater indoor seats
thriftshop
throne room
ticket booth
toll plaza
topiary garden
tower
toyshop
track outdoor
train railway
train station platform
tree farm
tree house
trench
underwater coral reef
utility room
valley
van interior
vegetable garden
veranda
veterinarians office
viaduct
videostore
village
vineyard
volcano
volleyball court indoor
volleyball court outdoor
waiting room
warehouse indoor
water tower
waterfall block
waterfall fan
waterfall plunge
watering hole
wave
wet bar
wheat field
wind farm
windmill
wine cellar barrel storage
wine cellar bottle storage
wrestling ring indoor
yard
youth hostel
""")

# Stanford Cars in the devkit's label order (cars_meta), "make model type year".
STANFORD_CARS_CLASSES = _lines("""
AM General Hummer SUV 2000
Acura RL Sedan 2012
Acura TL Sedan 2012
Acura TL Type-S 2008
Acura TSX Sedan 2012
Acura Integra Type R 2001
Acura ZDX Hatchback 2012
Aston Martin V8 Vantage Convertible 2012
Aston Martin V8 Vantage Coupe 2012
Aston Martin Virage Convertible 2012
Aston Martin Virage Coupe 2012
Audi RS 4 Convertible 2008
Audi A5 Coupe 2012
Audi TTS Coupe 2012
Audi R8 Coupe 2012
Audi V8 Sedan 1994
Audi 100 Sedan 1994
Audi 100 Wagon 1994
Audi TT Hatchback 2011
Audi S6 Sedan 2011
Audi S5 Convertible 2012
Audi S5 Coupe 2012
Audi S4 Sedan 2012
Audi S4 Sedan 2007
Audi TT RS Coupe 2012
BMW ActiveHybrid 5 Sedan 2012
BMW 1 Series Convertible 2012
BMW 1 Series Coupe 2012
BMW 3 Series Sedan 2012
BMW 3 Series Wagon 2012
BMW 6 Series Convertible 2007
BMW X5 SUV 2007
BMW X6 SUV 2012
BMW M3 Coupe 2012
BMW M5 Sedan 2010
BMW M6 Convertible 2010
BMW X3 SUV 2012
BMW Z4 Convertible 2012
Bentley Continental Supersports Conv. Convertible 2012
Bentley Arnage Sedan 2009
Bentley Mulsanne Sedan 2011
Bentley Continental GT Coupe 2012
Bentley Continental GT Coupe 2007
Bentley Continental Flying Spur Sedan 2007
Bugatti Veyron 16.4 Convertible 2009
Bugatti Veyron 16.4 Coupe 2009
Buick Regal GS 2012
Buick Rainier SUV 2007
Buick Verano Sedan 2012
Buick Enclave SUV 2012
Cadillac CTS-V Sedan 2012
Cadillac SRX SUV 2012
Cadillac Escalade EXT Crew Cab 2007
Chevrolet Silverado 1500 Hybrid Crew Cab 2012
Chevrolet Corvette Convertible 2012
Chevrolet Corvette ZR1 2012
Chevrolet Corvette Ron Fellows Edition Z06 2007
Chevrolet Traverse SUV 2012
Chevrolet Camaro Convertible 2012
Chevrolet HHR SS 2010
Chevrolet Impala Sedan 2007
Chevrolet Tahoe Hybrid SUV 2012
Chevrolet Sonic Sedan 2012
Chevrolet Express Cargo Van 2007
Chevrolet Avalanche Crew Cab 2012
Chevrolet Cobalt SS 2010
Chevrolet Malibu Hybrid Sedan 2010
Chevrolet TrailBlazer SS 2009
Chevrolet Silverado 2500HD Regular Cab 2012
Chevrolet Silverado 1500 Classic Extended Cab 2007
Chevrolet Express Van 2007
Chevrolet Monte Carlo Coupe 2007
Chevrolet Malibu Sedan 2007
Chevrolet Silverado 1500 Extended Cab 2012
Chevrolet Silverado 1500 Regular Cab 2012
Chrysler Aspen SUV 2009
Chrysler Sebring Convertible 2010
Chrysler Town and Country Minivan 2012
Chrysler 300 SRT-8 2010
Chrysler Crossfire Convertible 2008
Chrysler PT Cruiser Convertible 2008
Daewoo Nubira Wagon 2002
Dodge Caliber Wagon 2012
Dodge Caliber Wagon 2007
Dodge Caravan Minivan 1997
Dodge Ram Pickup 3500 Crew Cab 2010
Dodge Ram Pickup 3500 Quad Cab 2009
Dodge Sprinter Cargo Van 2009
Dodge Journey SUV 2012
Dodge Dakota Crew Cab 2010
Dodge Dakota Club Cab 2007
Dodge Magnum Wagon 2008
Dodge Challenger SRT8 2011
Dodge Durango SUV 2012
Dodge Durango SUV 2007
Dodge Charger Sedan 2012
Dodge Charger SRT-8 2009
Eagle Talon Hatchback 1998
FIAT 500 Abarth 2012
FIAT 500 Convertible 2012
Ferrari FF Coupe 2012
Ferrari California Convertible 2012
Ferrari 458 Italia Convertible 2012
Ferrari 458 Italia Coupe 2012
Fisker Karma Sedan 2012
Ford F-450 Super Duty Crew Cab 2012
Ford Mustang Convertible 2007
Ford Freestar Minivan 2007
Ford Expedition EL SUV 2009
Ford Edge SUV 2012
Ford Ranger SuperCab 2011
Ford GT Coupe 2006
Ford F-150 Regular Cab 2012
Ford F-150 Regular Cab 2007
Ford Focus Sedan 2007
Ford E-Series Wagon Van 2012
Ford Fiesta Sedan 2012
GMC Terrain SUV 2012
GMC Savana Van 2012
GMC Yukon Hybrid SUV 2012
GMC Acadia SUV 2012
GMC Canyon Extended Cab 2012
Geo Metro Convertible 1993
HUMMER H3T Crew Cab 2010
HUMMER H2 SUT Crew Cab 2009
Honda Odyssey Minivan 2012
Honda Odyssey Minivan 2007
Honda Accord Coupe 2012
Honda Accord Sedan 2012
Hyundai Veloster Hatchback 2012
Hyundai Santa Fe SUV 2012
Hyundai Tucson SUV 2012
Hyundai Veracruz SUV 2012
Hyundai Sonata Hybrid Sedan 2012
Hyundai Elantra Sedan 2007
Hyundai Accent Sedan 2012
Hyundai Genesis Sedan 2012
Hyundai Sonata Sedan 2012
Hyundai Elantra Touring Hatchback 2012
Hyundai Azera Sedan 2012
Infiniti G Coupe IPL 2012
Infiniti QX56 SUV 2011
Isuzu Ascender SUV 2008
Jaguar XK XKR 2012
Jeep Patriot SUV 2012
Jeep Wrangler SUV 2012
Jeep Liberty SUV 2012
Jeep Grand Cherokee SUV 2012
Jeep Compass SUV 2012
Lamborghini Reventon Coupe 2008
Lamborghini Aventador Coupe 2012
Lamborghini Gallardo LP 570-4 Superleggera 2012
Lamborghini Diablo Coupe 2001
Land Rover Range Rover SUV 2012
Land Rover LR2 SUV 2012
Lincoln Town Car Sedan 2011
MINI Cooper Roadster Convertible 2012
Maybach Landaulet Convertible 2012
Mazda Tribute SUV 2011
McLaren MP4-12C Coupe 2012
Mercedes-Benz 300-Class Convertible 1993
Mercedes-Benz C-Class Sedan 2012
Mercedes-Benz SL-Class Coupe 2009
Mercedes-Benz E-Class Sedan 2012
Mercedes-Benz S-Class Sedan 2012
Mercedes-Benz Sprinter Van 2012
Mitsubishi Lancer Sedan 2012
Nissan Leaf Hatchback 2012
Nissan NV Passenger Van 2012
Nissan Juke Hatchback 2012
Nissan 240SX Coupe 1998
Plymouth Neon Coupe 1999
Porsche Panamera Sedan 2012
Ram C/V Cargo Van Minivan 2012
Rolls-Royce Phantom Drophead Coupe Convertible 2012
Rolls-Royce Ghost Sedan 2012
Rolls-Royce Phantom Sedan 2012
Scion xD Hatchback 2012
Spyker C8 Convertible 2009
Spyker C8 Coupe 2009
Suzuki Aerio Sedan 2007
Suzuki Kizashi Sedan 2012
Suzuki SX4 Hatchback 2012
Suzuki SX4 Sedan 2012
Tesla Model S Sedan 2012
Toyota Sequoia SUV 2012
Toyota Camry Sedan 2012
Toyota Corolla Sedan 2012
Toyota 4Runner SUV 2012
Volkswagen Golf Hatchback 2012
Volkswagen Golf Hatchback 1991
Volkswagen Beetle Hatchback 2012
Volvo C30 Hatchback 2012
Volvo 240 Sedan 1993
Volvo XC90 SUV 2007
smart fortwo Convertible 2012
""")

IMAGENET_CLASSES = tuple(IMAGENET_CLASSNAMES)

# key -> (class names in label order, templates)
VOCABULARY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cifar10": (CIFAR10_CLASSES, CIFAR_TEMPLATES),
    "cifar100": (CIFAR100_CLASSES, CIFAR_TEMPLATES),
    "mnist": (DIGITS, NUMBER_TEMPLATES),
    "svhn": (DIGITS, NUMBER_TEMPLATES),
    "eurosat": (EUROSAT_CLASSES, EUROSAT_TEMPLATES),
    "dtd": (DTD_CLASSES, DTD_TEMPLATES),
    "gtsrb": (GTSRB_CLASSES, GTSRB_TEMPLATES),
    "stl10": (STL10_CLASSES, STL10_TEMPLATES),
    "flowers102": (FLOWERS102_CLASSES, FLOWERS102_TEMPLATES),
    "food101": (FOOD101_CLASSES, FOOD101_TEMPLATES),
    "oxford_pets": (OXFORD_PETS_CLASSES, OXFORD_PETS_TEMPLATES),
    "fgvc_aircraft": (FGVC_AIRCRAFT_CLASSES, FGVC_AIRCRAFT_TEMPLATES),
    "stanford_cars": (STANFORD_CARS_CLASSES, CARS_TEMPLATES),
    "resisc45": (RESISC45_CLASSES, RESISC45_TEMPLATES),
    "sun397": (SUN397_CLASSES, SUN397_TEMPLATES),
    "imagenet": (IMAGENET_CLASSES, IMAGENET_TEMPLATES),
}


def vocabulary(key: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(classnames, templates)`` of a catalog dataset key (``KeyError`` if it has none here)."""
    return VOCABULARY[key]


# --- checks shared by every editor of class names and templates ------------------------------------

def normalize_classname(raw: str) -> str:
    """The display form of a class name: NFC, ``_`` read as a space, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", raw).replace("_", " ").split())


def classname_key(name: str) -> str:
    """Two class names are the same class when these keys are equal (case and spacing ignored)."""
    return normalize_classname(name).casefold()


def looks_like_id(name: str) -> bool:
    """True for names that mean nothing to a text encoder: WordNet ids (``n01440764``)."""
    return bool(WORDNET_ID.match(name.strip()))


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in text)


def check_classnames(names: object, expected: int | None = None, *, field: str = "classnames") -> list[str]:
    """Every problem with a class-name list, each naming the field and what is allowed (empty = fine)."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return [f"{field}: expected a list of strings"]
    problems: list[str] = []
    if expected is not None and len(names) != expected:
        problems.append(f"{field}: expected {expected} names (one per class, in label order), got {len(names)}")
    seen: dict[str, int] = {}
    for i, raw in enumerate(names):
        name = normalize_classname(raw)
        if not name:
            problems.append(f"{field}[{i}]: empty; allowed: 1 to {MAX_CLASSNAME_CHARS} characters")
        elif len(name) > MAX_CLASSNAME_CHARS:
            problems.append(f"{field}[{i}]: {len(name)} characters; allowed: at most {MAX_CLASSNAME_CHARS}")
        elif _has_control(name):
            problems.append(f"{field}[{i}]: contains control characters")
        else:
            key = classname_key(name)
            if key in seen:
                problems.append(f"{field}[{i}]: {name!r} duplicates {field}[{seen[key]}] (case and spacing ignored)")
            seen.setdefault(key, i)
    return problems


def check_templates(templates: object, *, field: str = "templates") -> list[str]:
    """Every problem with a template list: 1..MAX_TEMPLATES strings, each with exactly one ``{}``."""
    if not isinstance(templates, (list, tuple)) or not all(isinstance(t, str) for t in templates):
        return [f"{field}: expected a list of strings"]
    problems: list[str] = []
    if not templates:
        problems.append(f"{field}: give at least one template, e.g. {DEFAULT_TEMPLATES[0]!r}")
    if len(templates) > MAX_TEMPLATES:
        problems.append(f"{field}: {len(templates)} templates; allowed: at most {MAX_TEMPLATES}")
    for i, t in enumerate(templates):
        if not t.strip():
            problems.append(f"{field}[{i}]: empty")
        elif len(t) > MAX_TEMPLATE_CHARS:
            problems.append(f"{field}[{i}]: {len(t)} characters; allowed: at most {MAX_TEMPLATE_CHARS}")
        elif t.count(PLACEHOLDER) != 1:
            problems.append(f"{field}[{i}]: {t!r} must contain exactly one {{}} where the class name goes")
        elif _has_control(t):
            problems.append(f"{field}[{i}]: contains control characters")
    return problems


def id_like_warnings(names: list[str] | tuple[str, ...]) -> list[str]:
    """Warnings for class names a text encoder cannot read (zero-shot still runs)."""
    ids = [n for n in names if looks_like_id(n)]
    if not ids:
        return []
    shown = ", ".join(repr(n) for n in ids[:3]) + (" …" if len(ids) > 3 else "")
    return [
        f"{len(ids)} class name(s) look like WordNet ids ({shown}); zero-shot prompts are built from class "
        "names, so rename them to words (e.g. 'tench') for meaningful zero-shot accuracy"
    ]
