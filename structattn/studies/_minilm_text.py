"""A plain English text for the MiniLM study inputs (written for structattn; no licence terms).

About 1,800 WordPiece tokens of descriptive prose in paragraphs, long enough for windows of
512 tokens starting at many different sentences (:mod:`structattn.studies.minilm`).
"""

TEXT = """\
The river winds slowly through the valley before it reaches the old stone bridge. \
Farmers in the region grow wheat, barley and potatoes on the terraced hillsides. \
In the spring the orchards bloom and the air smells of apple blossoms. \
By the end of the summer the branches bend under the weight of the fruit, and whole \
families come out to help with the harvest.

The library on the main square keeps maps that are more than three centuries old. \
Some of them show roads that no longer exist and villages that were abandoned after the \
great flood. A retired teacher spends her mornings there, copying the names of fields \
and farms into a notebook, because she wants to write the history of every house in the \
parish. She says that the old names explain more than the official records do.

A narrow railway climbs the mountain, stopping at every village along the way. \
The journey takes almost three hours, and in winter the train sometimes waits for the \
snowplough at the last station. Passengers drink tea in the waiting room and talk about \
the weather, the price of wood and the news from the capital.

Scientists measured the temperature of the lake every morning for ten years. \
The results showed that the water had warmed by almost two degrees. \
They also counted the fish, collected samples of the mud and recorded the date on which \
the ice melted each spring. When they published their report, the fishermen were not \
surprised: they had noticed long ago that the trout were moving to deeper water.

Children walk to the school by the church, carrying their books in leather bags. \
Their teacher begins every lesson with a question written on the blackboard, and nobody \
may leave until someone has found an answer. On Fridays the class goes into the forest to \
draw trees, and on rainy days they read stories aloud and argue about the endings.

On market days the streets fill with stalls selling cheese, bread and honey. \
Traders arrive before sunrise with carts and small vans, and by nine o'clock the square is \
so crowded that it is hard to cross it. An old man sells knives that he sharpens on a \
wheel turned by his bicycle, and a young woman sells plants that she grows in her \
greenhouse behind the station.

The museum displays tools that the first settlers used to build their houses. \
There are axes, saws and planes, but also spinning wheels, cradles and a loom that still \
works. Visitors are allowed to try the loom, and most of them are surprised by how \
slowly a single row of cloth grows under their hands.

Engineers designed a new dam to protect the town from the autumn floods. \
The project took six years and cost far more than the council had expected. \
Some people complained that the lake behind the dam covered the best meadows, while \
others pointed out that no house had been flooded since the dam was finished.

The committee discussed the budget for the hospital and approved a new wing. \
The doctors had asked for more beds, a modern laboratory and a room where families could \
wait in comfort. The debate lasted until midnight, because every member of the \
committee wanted to speak, and the final vote was unanimous.

Storms from the west bring heavy rain, and the roads are often closed in winter. \
During the worst storm of the decade the power failed for four days, and neighbours \
shared food, candles and firewood. Many people still tell stories about those days, and \
they usually end by saying that the village has never been as friendly since.

Musicians gather in the evening and play old songs in the courtyard of the inn. \
A violinist leads the group, and anyone who knows the tune may join with a guitar, a \
flute or simply a voice. Tourists sometimes record the music on their phones, but the \
musicians do not mind, as long as nobody talks during the slow songs.

The professor explained how the proof depends on a simple but clever inequality. \
Students asked whether the method would still work for much larger matrices. \
She answered that the bound would hold, but that the constant would become so large \
that the result would be useless in practice, and that a better idea was needed. \
After the lecture two of the students stayed behind and filled the blackboard with \
attempts, most of which failed for reasons they only understood the next morning.

A computer can multiply two numbers in a fraction of a billionth of a second. \
Yet a program that compares every word of a long document with every other word can \
still take minutes, because the number of comparisons grows very quickly. \
The attention mechanism lets every word of a sentence look at every other word. \
Long documents are expensive, because the cost grows with the square of the length. \
Researchers have therefore proposed many shortcuts: some look only at nearby words, some \
summarise distant words in blocks, and some replace the exact comparison by a cheaper \
random estimate. Each shortcut works well for some texts and badly for others.

The detective noticed that the clock in the hall had stopped at half past nine. \
She opened the letter carefully and read it twice before she said a word. \
Then she asked the butler when he had last wound the clock, and the butler, who had \
worked in the house for thirty years, could not remember. The letter was unsigned, but \
the paper was expensive and smelled faintly of tobacco.

The ship left the harbour at dawn with a cargo of timber and salted fish. \
Sailors watched the clouds and knew that a storm would arrive before midnight. \
The captain decided to sail north along the coast, where the cliffs would give them \
some shelter, and by the evening the wind was so strong that the crew had to tie \
themselves to the mast. The next morning the sea was calm again, and the ship reached \
the port with only a torn sail.

The recipe calls for flour, butter, two eggs and a pinch of salt. \
After an hour in the oven the bread was golden and the kitchen was warm. \
My grandmother never weighed anything; she measured flour with a teacup and butter with \
her thumb, and her bread was always better than ours.

Birds return to the marsh every year, and volunteers count them in April. \
Last spring they counted more herons than ever before, but fewer ducks, and nobody \
could agree on the reason. Some blamed the foxes, others the new road, and a few said \
that the counting had simply been done on a windy day.

The city council voted to plant a thousand trees along the new avenue. \
Historians still argue about the causes of the war and the terms of the treaty. \
The treaty was signed in a small town near the border on a cold morning. \
Its articles were written in two languages, and for many years lawyers disagreed about \
which version should be followed when the two did not say the same thing.

Her grandfather repaired watches in a tiny shop behind the cathedral. \
He worked with a magnifying glass fixed to his eye, and he could hear from across the \
room whether a watch was running too fast. When he retired he gave his tools to the \
museum, except for a small screwdriver that he kept in his pocket until the end.

The telescope on the hill allowed astronomers to observe distant galaxies. \
They found that the light from the galaxy had travelled for millions of years. \
On clear nights the observatory opens its doors to the public, and children queue for \
a chance to see the rings of Saturn, which always look smaller than they expected.

The football match was postponed because the field was covered in snow. \
A young painter rented a room above the bakery and painted the rooftops. \
In the mornings the smell of bread came up through the floor, and she said that it \
made her paint warmer colours than she had ever used in the city.

The company announced that it would open a factory near the harbour next year. \
Workers were worried about the noise, but the mayor promised strict rules. \
The factory will make parts for bicycles and small boats, and it is expected to employ \
about two hundred people, many of whom now travel an hour each way to work.

The garden behind the house has roses, lavender and an old fig tree. \
Every summer the family travelled to the coast and stayed in a wooden cottage. \
The bridge was closed for repairs, so drivers had to take the long road north. \
In the final chapter the hero returns home and finds that everything has changed: the \
inn has a new owner, the school has moved to the other side of the river, and the old \
stone bridge has been replaced by a wide road of grey concrete. Only the river is the \
same, winding slowly through the valley as it always did.
"""
